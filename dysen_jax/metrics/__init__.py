"""Evaluation metrics. Input conventions: videos are uint8 [N, F, H, W, 3], images uint8 [N, H, W, 3] (RGB).

- frechet: `feature_statistics`, `frechet_distance` (float64; the distance behind FID and FVD).
- fvd: `I3DFeatures` (Kinetics-400 I3D logits [N, 400]; 224x224, [-1, 1], 16 frames) and `fvd`.
- fid: `InceptionFeatures` (TF FID InceptionV3 pool_3 [N, 2048]; 299x299) and `fid` (videos: all frames).
"""
