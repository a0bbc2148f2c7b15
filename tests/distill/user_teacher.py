"""A teacher 'the user wrote' (not in pncd's registry), for the factory-teacher test."""

from torch import nn


class TinyTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 12, 3, stride=2, padding=1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(12, 20, 3, stride=4, padding=1), nn.ReLU())
        self.head = nn.Conv2d(20, 2, 1)
        self.up = nn.Upsample(scale_factor=8, mode="bilinear", align_corners=False)

    def forward(self, x):
        return self.up(self.head(self.deep(self.stem(x))))


def build() -> nn.Module:
    return TinyTeacher()
