"""Vision: our ViT and the MVP registry, pure S², weights, the frozen S² encoder and its presets, the MAE model."""
