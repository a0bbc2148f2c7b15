"""Applications built from the library: the demo pipeline, the ablation grid and the distillation comparison."""
