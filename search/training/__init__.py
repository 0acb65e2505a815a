"""Scoring one candidate: backbones, the tap cache, the training loop, the task's metrics.

- `pretrain`: per-modality backbones, pretrained once and cached on disk;
- `taps`: every tap of every sample, computed once (candidates never run a backbone);
- `train`: `fit`, the one training loop, and `evaluate_candidate`;
- `tasks`: each task type's loss and metrics;
- `latency`: the measured `latency` objective;
- `baselines_fit`: training the baselines a run records before its search.
"""
