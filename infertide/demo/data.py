"""Sample data for ``infertide demo``: real photographs from scikit-image, a clip panned over them, review texts.

Only images that ship inside the scikit-image wheel are used (no pooch download,
no network). Every event carries a ``user_id`` and the photos' ``item_id`` so the
recommendation path has engagements to work with.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image

from infertide.clients.produce import image_events, now_ms
from schemas.events import ImageEvent, TextEvent

__all__ = ["PHOTOS", "USERS", "demo_images", "demo_texts", "demo_video", "image_events_for_users"]

# skimage.data functions whose files are in the wheel (checked: astronaut.png, coffee.png, chelsea.png,
# rocket.jpg, hubble_deep_field.jpg under skimage/data/).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
USERS = ("ana", "ben", "chen", "dara", "eli")

_POSITIVE = ["I loved {x}, absolutely wonderful", "{x} is great, would look again", "What a beautiful shot of {x}",
             "Excellent {x}, really made my day", "{x}: brilliant colours and a superb composition",
             "Fantastic picture of {x}, five stars", "Such a delightful {x}", "{x} is lovely and charming"]
_NEGATIVE = ["{x} is boring, I hated it", "Awful picture of {x}, terrible lighting", "{x} was a waste of time",
             "Dull and disappointing {x}", "I really disliked {x}, poor and blurry",
             "The worst {x} I have seen, awful"]
_NAMES = {"astronaut": "the astronaut portrait", "coffee": "the coffee cup", "chelsea": "Chelsea the cat",
          "rocket": "the rocket launch", "hubble_deep_field": "the Hubble deep field"}


def _photo(name: str) -> Image.Image:
    from skimage import data

    img = Image.fromarray(getattr(data, name)()).convert("RGB")
    img.thumbnail((512, 512))
    return img


def demo_images(folder: Path) -> list[Path]:
    """The photos as JPEG files named ``<photo>.jpg`` (the file name is the item id)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        path = folder / f"{name}.jpg"
        if not path.exists():
            _photo(name).save(path, format="JPEG", quality=85)
        paths.append(path)
    return paths


def image_events_for_users(paths: list[Path]) -> list[ImageEvent]:
    """Each user views each photo once: ``len(USERS) * len(paths)`` events."""
    return [ev for user in USERS for ev in image_events(paths, user_id=user, source="demo")]


def demo_texts(n: int = 60, seed: int = 7) -> list[TextEvent]:
    """Review-like lines about the photos, two in three positive, each with a user and the photo's item id."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        photo = PHOTOS[i % len(PHOTOS)]
        templates = _NEGATIVE if i % 3 == 2 else _POSITIVE
        text = rnd.choice(templates).format(x=_NAMES[photo])
        out.append(TextEvent(event_id=f"demo-text-{i}", ts=now_ms(), user_id=USERS[(i * 7) % len(USERS)],
                             item_id=f"{photo}.jpg", source="demo", text=text[0].upper() + text[1:]))
    return out


def demo_video(folder: Path, n_frames: int = 48, size: tuple[int, int] = (320, 240)) -> Path:
    """A clip as a folder of JPEG frames: a slow pan and zoom over the astronaut, then the coffee photo."""
    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("frame_*.jpg"))) == n_frames:
        return folder
    half = n_frames // 2
    for i in range(n_frames):
        src = _photo("astronaut" if i < half else "coffee")
        t = (i % half) / max(1, half - 1)
        zoom = 1.0 - 0.4 * t  # crop from the whole image down to 60% of it
        w, h = src.width * zoom, src.height * zoom
        x0, y0 = (src.width - w) * t, (src.height - h) * (0.5 * t)
        frame = src.crop((int(x0), int(y0), int(x0 + w), int(y0 + h))).resize(size)
        frame.save(folder / f"frame_{i:04d}.jpg", format="JPEG", quality=80)
    return folder

