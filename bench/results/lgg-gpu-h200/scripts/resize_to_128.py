# Pre-resize LGG FLAIR to 128x128 (the grid's size) so it fits the device transfer limit.
import json, shutil, sys
from pathlib import Path
import nibabel as nib, numpy as np, torch, torch.nn.functional as F
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
(dst / "images").mkdir(parents=True, exist_ok=True); (dst / "labels").mkdir(parents=True, exist_ok=True)
shutil.copy(src / "splits.json", dst / "splits.json")
for p in sorted((src / "images").glob("*.nii.gz")):
    img = nib.load(p); lab = nib.load(src / "labels" / p.name)
    x = np.asarray(img.dataobj).astype(np.float32)  # (256, 256, S): x=col, y=row
    m = np.asarray(lab.dataobj).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 1, 0)))[:, None]  # (S,1,row,col)
    xr = F.interpolate(t, size=(128, 128), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    mr = F.interpolate(torch.from_numpy(np.ascontiguousarray(m.transpose(2, 1, 0)))[:, None], size=(128, 128), mode="nearest-exact")[:, 0]
    xr = np.clip(np.rint(xr.numpy()), 0, 255).astype(np.uint8).transpose(2, 1, 0)
    mr = np.rint(mr.numpy()).astype(np.uint8).transpose(2, 1, 0)
    nib.save(nib.Nifti1Image(xr, np.eye(4)), dst / "images" / p.name)
    nib.save(nib.Nifti1Image(mr, np.eye(4)), dst / "labels" / p.name)
print("done")
