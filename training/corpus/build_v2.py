"""Build corpus v2: more real voices (English included), fakes in the real voices' languages,
a telephone channel with real narrow-band codecs, splits by speaker and by generator family,
and long "calls" for the call-level policy.

Why a v2: the v1 corpus (``build.py``) had only Czech and Dutch voice acting and single words as
real speech while every English voice was synthetic, so "English" alone meant "fake"; it had one
telephone codec (G.711 mu-law) and few real speakers. v2 keeps v1's sources and its common
processing chain (``build.finish_clip`` steps 1-7) and adds:

* real English speech: the voice acting of *Flight of the Amazon Queen*
  (``flight-of-the-amazon-queen``: the hero Joe in train, every other character in val/test, split
  by dialogue), the voice acting of *Beneath a Steel Sky* (``beneath-a-steel-sky``, British
  cast, no speaker ids: train only; RNC-packed files are unpacked by :mod:`rnc`), LibriVox
  read speech from
  ``pocketsphinx-testdata`` (test), and letters/syllables in 20 languages from ``klettres-data``;
* fakes in the languages of the real speech: espeak-ng voices in cs, nl, en, de, fr, ru, es, it,
  pl, sv, bg, sl; more Festival voices (Czech krb/ph, Italian pc, Russian clunits, Catalan HTS);
* a **bandwidth class** per clip, balanced between the classes: the 11 kHz game recordings can only
  reach 5.5 kHz, so the same share of fakes (and of the other recordings) is low-passed at 5 kHz
  too; without it, bandwidth alone would say "real";
* the **telephone channel** (:func:`phone_channel`) on ~35% of clips: band-pass, 8 kHz, one of
  G.711 mu-law / A-law, GSM 06.10, AMR-NB, G.726, Opus and Speex (sox / ffmpeg), packet loss with
  zero-fill or repeat, line noise and level changes;
* a ``family`` column (formant, diphone, unit-selection, parametric, neural, vocoder) for
  leave-one-family-out, and a ``lang`` column for the shortcut audit;
* ``val-calls.csv`` / ``test-calls.csv``: 20-45 s pseudo-calls, each the utterances of one voice
  of the split joined with pauses and put through one channel (clean or phone), for the
  call-level false-alarm rate and detection delay (``streamguard evaluate`` reports both).

Run: ``python training/corpus/build_v2.py`` (installs missing Debian/PyPI packages unless
``--no-install``; ~30-40 min on 2 shared cores; ``--limit`` for a smoke test). Audio goes to
``.corpus-v2/`` (git-ignored); manifests to ``training/corpus/v2/``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build as v1  # noqa: E402  (the v1 builder beside this file: chain, jobs, generators)
from build import (  # noqa: E402
    SPLITS,
    SR,
    Job,
    dialog_split,
    frame_db,
    log,
    lowpass,
    normalise_loudness,
    pad_and_floor,
    rng_for,
    shuffled,
    stable_unit,
    trim_silence,
    vorbis_round_trip,
)

REPO = HERE.parents[1]
CHAIN_VERSION = 1
PHONE_SHARE = 0.35
PHONE_CODECS = ("mulaw", "alaw", "gsm", "amr-nb", "g726", "opus", "speex")
NARROW_SHARE = 0.45  # share of clips of each class (and split) low-passed at 5 kHz
NARROW_HZ = 5_000.0
MIN_SECONDS = 1.0
MAX_SECONDS = 7.4

BASS = Path("/usr/share/scummvm/beneath-a-steel-sky")
FOTAQ = Path("/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
KLETTRES = Path("/usr/share/klettres")

APT_PACKAGES = {
    **v1.APT_PACKAGES,
    "beneath-a-steel-sky": "English voice acting, British cast (real)",
    "flight-of-the-amazon-queen": "English voice acting, another cast (real)",
    "pocketsphinx-testdata": "LibriVox read English (real)",
    "klettres-data": "letters and syllables in ~20 languages (real)",
    "festvox-czech-krb": "festival voice czech_krb (child)",
    "festvox-czech-ph": "festival voice czech_ph",
    "festvox-itapc16k": "festival voice pc_diphone (Italian)",
    "festvox-ru": "festival voice msu_ru_nsh_clunits (Russian unit selection)",
    "festvox-ca-ona-hts": "festival HTS voice upc_ca_ona_hts (Catalan)",
    "festival-ca": "Catalan front end for upc_ca_ona_hts",
}

# ----------------------------------------------------------------------------- split tables
# Real speakers of fillets/ktuberling keep their v1 splits (v1.REAL_SPEAKER_SPLIT, v1.KT_SPLIT).
KLETTRES_SPLIT = {
    **dict.fromkeys(
        ["cs", "da", "de", "en_GB", "hu", "lt", "nds", "ru", "uk", "ml", "ar"], "train"
    ),
    **dict.fromkeys(["nb", "he", "tn"], "val"),
    **dict.fromkeys(["en", "es", "fr", "it", "nl", "pt_BR"], "test"),
}
KLETTRES_CAP = 25
CAPS = {"bass": 700, "fotaq": {"train": 700, "val": 200, "test": 450}, "librivox": 30}

ESPEAK_VOICES = {
    "train": [
        ("en-us+m3", "en"), ("en+f2", "en"), ("en-gb-scotland+m1", "en"), ("en-029+f5", "en"),
        ("cs+m2", "cs"), ("cs+f1", "cs"), ("nl+m1", "nl"), ("nl+f3", "nl"), ("de+f3", "de"),
        ("fr-fr+m2", "fr"), ("ru+f2", "ru"), ("es+m1", "es"), ("sv+m3", "sv"), ("pl+f4", "pl"),
    ],
    "val": [("en-us+f4", "en"), ("nl+f2", "nl"), ("it+m3", "it"), ("cs+m6", "cs")],
    "test": [
        ("en-gb-x-rp+m4", "en"), ("en-us-nyc+f3", "en"), ("cs+f4", "cs"), ("nl+m5", "nl"),
        ("de+m7", "de"), ("fr-fr+f2", "fr"), ("ru+m4", "ru"), ("bg+m1", "bg"), ("sl+f1", "sl"),
    ],
}  # fmt: skip
FLITE_VOICES = {"train": [("kal", "en"), ("awb", "en")], "val": [("kal16", "en")],
                "test": [("rms", "en"), ("slt", "en")]}  # fmt: skip
FESTIVAL_VOICES = {
    "train": [("kal_diphone", "en"), ("czech_machac", "cs"), ("czech_krb", "cs"),
              ("pc_diphone", "it")],
    "val": [("lp_diphone", "it")],
    "test": [("ked_diphone", "en"), ("czech_dita", "cs"), ("czech_ph", "cs")],
}  # fmt: skip
FESTIVAL_UNITSEL_VOICES = {"train": [("msu_ru_nsh_clunits", "ru")]}
# The held-out family (test only): statistical parametric synthesis, HTS voices.
FESTIVAL_HTS_VOICES = {"test": [("cmu_us_slt_arctic_hts", "en"), ("upc_ca_ona_hts", "es")]}
PIPER_VOICES = {s: [("joe", "en")] for s in SPLITS}

FAMILY = {
    "fake-espeak": "formant",
    "fake-flite": "unit-selection",  # kal is a diphone voice, awb/rms/slt clustergen; see README
    "fake-festival": "diphone",
    "fake-festival-unitsel": "unit-selection",
    "fake-festival-hts": "parametric",
    "fake-piper": "neural",
    "fake-griffinlim": "vocoder",
    "fake-world": "vocoder",
}
FAKE_WEIGHTS = {
    "fake-espeak": 0.20,
    "fake-flite": 0.08,
    "fake-festival": 0.14,
    "fake-festival-unitsel": 0.05,
    "fake-festival-hts": 0.10,
    "fake-piper": 0.15,
    "fake-griffinlim": 0.14,
    "fake-world": 0.14,
}
FESTIVAL_ENCODING = {**v1.FESTIVAL_ENCODING, "ru": "utf-8", "es": "iso-8859-1"}

# ----------------------------------------------------------------------------- game archives


def bass_speech_files() -> list[tuple[int, int, int, int]]:
    """``(file number, offset, stored size, flags)`` of the speech files of the BASS CD data.

    sky.dnr is a table of 8-byte entries (uint16 file number, 24-bit offset with a shift flag,
    24-bit size with flags) into sky.dsk; speech files are numbers >= 50000: a 22-byte header
    then 8-bit unsigned PCM at 11025 Hz, about half of them RNC-packed (:mod:`rnc`).
    """
    dnr = (BASS / "sky.dnr").read_bytes()
    count = struct.unpack("<I", dnr[:4])[0]
    files = []
    for i in range(count):
        entry = dnr[4 + 8 * i : 12 + 8 * i]
        number = struct.unpack("<H", entry[:2])[0]
        if number < 50000:
            continue
        offset = struct.unpack("<I", entry[2:6])[0] & 0xFFFFFF
        flags = entry[5] | entry[6] << 8 | entry[7] << 16
        if (offset >> 23) & 1:
            offset = (offset & 0x7FFFFF) << 4
        size = flags & 0x3FFFFF
        if size > 22 + 11_025 // 2:  # at least ~0.5 s (packed files are smaller: close enough)
            files.append((number, offset, size, flags))
    return files


def read_bass(offset: int, size: int, flags: int) -> tuple[np.ndarray, int]:
    """One speech file as float32 at 11025 Hz (unpacking RNC where the header says so)."""
    from rnc import rnc_unpack

    with (BASS / "sky.dsk").open("rb") as dsk:
        dsk.seek(offset)
        data = dsk.read(size)
    header_flag = struct.unpack("<H", data[:2])[0]
    if not (flags >> 23) & 1 and (header_flag >> 7) & 1:
        # Bit 22: the packed stream holds the header too; else the header stays unpacked.
        data = rnc_unpack(data[22:]) if (flags >> 22) & 1 else data[:22] + rnc_unpack(data[22:])
    total = struct.unpack("<11H", data[:22])[6]
    raw = np.frombuffer(data[22:total], dtype=np.uint8)
    return (raw.astype(np.float32) - 128.0) / 128.0, 11_025


def fotaq_speech_files() -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of the speech (``*.SB``, MP3 at 11025 Hz) in FOTAQ's queen.1c.

    queen.1c: ``QTBL``, 6-byte version, 2 bytes, compression byte, uint16 BE entry count, then
    21-byte entries (12-byte name, bundle byte, uint32 BE offset, uint32 BE size).
    """
    with FOTAQ.open("rb") as fh:
        head = fh.read(15)
        if head[:4] != b"QTBL":
            raise ValueError("queen.1c: no QTBL table")
        count = struct.unpack(">H", head[13:15])[0]
        out = []
        for _ in range(count):
            rec = fh.read(21)
            name = rec[:12].split(b"\0")[0].decode("ascii", "replace")
            offset, size = struct.unpack(">II", rec[13:21])
            if name.endswith(".SB") and size > 3000:
                out.append((name, offset, size))
    return out


def read_fotaq(offset: int, size: int) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with FOTAQ.open("rb") as fh:
        fh.seek(offset)
        data = fh.read(size)
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1), rate


# ----------------------------------------------------------------------------- real jobs


def _job(attack, speaker, name, split, kind, params, text_key, derived, lang) -> Job:
    job = Job(attack, speaker, name, "real", split, kind, params, text_key, derived)
    job.params["lang"] = lang
    return job


def real_game_jobs(seed: int) -> list[Job]:
    jobs: list[Job] = []
    if (BASS / "sky.dnr").is_file():
        files = shuffled(bass_speech_files(), seed, "bass")[: CAPS["bass"]]
        for number, offset, size, flags in files:
            # No speaker ids in the data: the whole cast is in train (never in val/test).
            jobs.append(
                _job("real-bass", "bass-cast", f"s{number}", "train", "bass",
                     {"offset": offset, "size": size, "flags": flags}, f"bass/{number}",
                     f"sky.dsk#{number}", "en")
            )  # fmt: skip
    if FOTAQ.is_file():
        by_split: dict[str, list[Job]] = defaultdict(list)
        for name, offset, size in fotaq_speech_files():
            # Names are <dialogue 5 digits><line><J|P|digit>...SB; J = Joe, the hero (one
            # actor): train. Everyone else (the other party of each dialogue, a small cast that
            # differs from BASS's) is split by dialogue into val and test, never train.
            dialogue = name[:5]
            if len(name) > 6 and name[6] == "J":
                who, split = "joe", "train"
            else:
                who = "others"
                split = "val" if stable_unit(f"fotaq:{dialogue}") < 0.3 else "test"
            by_split[split].append(
                _job("real-fotaq", f"fotaq-{who}", name.removesuffix(".SB"), split, "fotaq",
                     {"offset": offset, "size": size}, f"fotaq/{dialogue}/{name[5:-3]}",
                     f"queen.1c#{name}", "en")
            )  # fmt: skip
        for split, group in sorted(by_split.items()):
            jobs += shuffled(group, seed, f"fotaq:{split}")[: CAPS["fotaq"][split]]
    if LIBRIVOX.is_dir():
        for k, wav in enumerate(sorted(LIBRIVOX.glob("*.wav"))[: CAPS["librivox"]]):
            jobs.append(
                _job("real-librivox", "librivox-austen", wav.stem, "test", "file",
                     {"path": str(wav)}, f"librivox/{k}", str(wav), "en")
            )  # fmt: skip
    return jobs


def real_klettres_jobs(seed: int) -> list[Job]:
    jobs: list[Job] = []
    for lang, split in sorted(KLETTRES_SPLIT.items()):
        files = sorted((KLETTRES / lang).rglob("*.ogg")) + sorted((KLETTRES / lang).rglob("*.wav"))
        if not files:
            continue
        files = shuffled(files, seed, f"kl:{lang}")
        rng = rng_for(seed, f"klgroups:{lang}")
        i = k = 0
        while i < len(files) and k < KLETTRES_CAP:
            n = int(rng.integers(4, 8))
            group = files[i : i + n]
            i += n
            if len(group) < 3:
                break
            jobs.append(
                _job("real-klettres", f"klettres-{lang}", f"kl{k:03d}", split, "concat",
                     {"paths": [str(p) for p in group]}, f"kl/{lang}/{k}",
                     ";".join(str(p.relative_to(KLETTRES)) for p in group), lang.split("_")[0])
            )  # fmt: skip
            k += 1
    return jobs


def real_v1_jobs(lines, seed: int, available: set[str]) -> list[Job]:
    jobs: list[Job] = []
    if "fillets" in available:
        for job in v1.real_fillets_jobs(lines, seed):
            job.params["lang"] = job.attack.rsplit("-", 1)[1]
            jobs.append(job)
    if "ktuberling" in available:
        for job in v1.real_kt_jobs(seed):
            job.params["lang"] = job.speaker.split("-", 1)[1]
            jobs.append(job)
    return jobs


# ----------------------------------------------------------------------------- fake jobs


def fake_counts(real_per_split: Counter, present: dict) -> dict[tuple[str, str], int]:
    counts = {}
    for split in SPLITS:
        gens = [g for g, table in present.items() if table.get(split)]
        total_w = sum(FAKE_WEIGHTS[g] for g in gens)
        for g in gens:
            counts[(g, split)] = round(real_per_split[split] * FAKE_WEIGHTS[g] / total_w)
    return counts


def plan(seed: int, available: set[str]) -> list[Job]:
    lines = v1.read_dialogs() if "fillets" in available else {}
    real = real_v1_jobs(lines, seed, available) + real_klettres_jobs(seed) + real_game_jobs(seed)
    engines = {
        "fake-espeak": ("espeak", ESPEAK_VOICES),
        "fake-flite": ("flite", FLITE_VOICES),
        "fake-festival": ("festival", FESTIVAL_VOICES),
        "fake-festival-unitsel": ("festival", FESTIVAL_UNITSEL_VOICES),
        "fake-festival-hts": ("festival_hts", FESTIVAL_HTS_VOICES),
        "fake-piper": ("piper_tts", PIPER_VOICES),
    }
    tables = {a: t for a, (_, t) in engines.items() if a in available}
    tables.update({g: {s: [1] for s in SPLITS} for g in ("fake-griffinlim", "fake-world")
                   if g in available})  # fmt: skip
    counts = fake_counts(Counter(j.split for j in real), tables)
    fakes: list[Job] = []
    for attack, (engine, voices) in engines.items():
        if attack in available:
            for job in v1.tts_jobs(attack, engine, voices, counts, lines, seed):
                fakes.append(job)
    candidates: dict[str, list[Job]] = defaultdict(list)
    for job in real:
        if (
            job.kind == "concat"
            or job.attack not in ("real-fillets-cs", "real-fillets-nl")
            or (dialog_split(job.text_key) == job.split)
        ):
            candidates[job.split].append(job)
    candidates = {k: sorted(v, key=lambda j: j.clip_id) for k, v in candidates.items()}
    for attack, kind in (("fake-griffinlim", "griffinlim"), ("fake-world", "world")):
        if attack in available:
            fakes += v1.resynth_jobs(attack, kind, candidates, counts, seed)
    jobs = real + fakes
    for job in jobs:
        job.speaker = job.speaker.replace("piper_tts-", "piper-").replace(
            "festival_hts-", "festival-"
        )
    return jobs


def detect_available(install: bool) -> set[str]:
    available = v1.detect_available(install)
    present = v1.ensure_apt(APT_PACKAGES, install=install)
    if "festvox-ru" in present:
        available.add("fake-festival-unitsel")
    return available


# ----------------------------------------------------------------------------- the chain


def phone_channel(
    x: np.ndarray, rng: np.random.Generator, tmp: Path, codec: str | None = None
) -> tuple[np.ndarray, str]:
    """A telephone line: band-pass, 8 kHz, a narrow-band codec, packet loss, noise, level.

    Returns the 16 kHz result and a short description (``"gsm+loss"``) for the manifest.
    Codecs: G.711 mu-law / A-law (streamguard.audio.codecs), GSM 06.10 and AMR-NB (sox),
    G.726 ADPCM, Opus and Speex (ffmpeg). A codec whose tool is missing falls back to G.711.
    """
    import soxr
    from scipy.signal import butter, sosfiltfilt

    from streamguard.audio import codecs

    low, high = rng.uniform(200, 400), rng.uniform(3000, 3600)
    sos = butter(4, [low, high], btype="band", fs=SR, output="sos")
    y = sosfiltfilt(sos, x).astype(np.float32)
    y = y * np.float32(10 ** (rng.uniform(-10, 6) / 20))  # level: a quiet or hot line
    narrow = np.clip(soxr.resample(y, SR, 8_000, quality="HQ"), -1.0, 1.0).astype(np.float32)
    drawn = str(rng.choice(PHONE_CODECS))  # drawn even when fixed: same random stream
    codec = codec or drawn
    try:
        narrow = _codec_round_trip(narrow, codec, rng, tmp)
    except (subprocess.SubprocessError, OSError, RuntimeError, ValueError):
        codec = "mulaw"
    if codec in ("mulaw", "alaw"):
        narrow = codecs.decode(codec, codecs.encode(codec, narrow))
    tags = [codec]
    if rng.random() < 0.4:  # packet loss: 20 ms frames lost, zero-filled or repeated (PLC)
        frame = 160
        n = len(narrow) // frame
        lost = rng.random(n) < rng.uniform(0.01, 0.06)
        repeat = rng.random() < 0.5
        for i in np.flatnonzero(lost):
            seg = slice(i * frame, (i + 1) * frame)
            narrow[seg] = narrow[(i - 1) * frame : i * frame] if repeat and i > 0 else 0.0
        tags.append("loss")
    if rng.random() < 0.5:  # line / room noise at 15-40 dB SNR
        power = float(np.mean(narrow**2)) + 1e-12
        snr = rng.uniform(15, 40)
        narrow = narrow + rng.standard_normal(len(narrow)).astype(np.float32) * np.float32(
            np.sqrt(power / 10 ** (snr / 10))
        )
        tags.append("noise")
    wide = soxr.resample(np.asarray(narrow, np.float32), 8_000, SR, quality="HQ")
    wide = wide[: len(x)] if len(wide) >= len(x) else np.pad(wide, (0, len(x) - len(wide)))
    return np.clip(wide, -1.0, 1.0).astype(np.float32), "+".join(tags)


def _codec_round_trip(x: np.ndarray, codec: str, rng, tmp: Path) -> np.ndarray:
    import soundfile as sf

    if codec in ("mulaw", "alaw"):
        return x
    src, dst, back = tmp / "ph_in.wav", tmp / "ph_coded", tmp / "ph_out.wav"
    sf.write(str(src), x, 8_000, subtype="PCM_16")
    run = lambda cmd: subprocess.run(cmd, check=True, capture_output=True, timeout=60)  # noqa: E731
    if codec in ("gsm", "amr-nb"):
        coded = dst.with_suffix(".gsm" if codec == "gsm" else ".amr")
        extra = [] if codec == "gsm" else ["-C", str(int(rng.integers(0, 8)))]
        run(["sox", str(src), *extra, "-t", codec, str(coded)])
        run(["sox", "-t", codec, str(coded), "-r", "8000", "-b", "16", str(back)])
    else:
        encoder = {
            "g726": ["-c:a", "adpcm_g726", "-b:a", f"{int(rng.choice([16, 24, 32, 40]))}k",
                     "-f", "wav"],
            "opus": ["-c:a", "libopus", "-b:a", f"{int(rng.integers(6, 17))}k",
                     "-application", "voip", "-f", "ogg"],
            "speex": ["-c:a", "libspeex", "-f", "ogg"],
        }[codec]  # fmt: skip
        coded = dst.with_suffix(".bin")
        run(["ffmpeg", "-v", "error", "-y", "-i", str(src), *encoder, str(coded)])
        run(["ffmpeg", "-v", "error", "-y", "-i", str(coded), "-ar", "8000", "-ac", "1",
             "-c:a", "pcm_s16le", str(back)])  # fmt: skip
    y, _ = sf.read(str(back), dtype="float32")
    y = y.reshape(-1)
    return y[: len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def finish_clip(x, rng, *, narrow: bool, phone: bool, tmp: Path):
    """v1's chain (DC, low-pass, trim, crop, loudness, pauses + floor, Vorbis) with a bandwidth
    class (7 or 5 kHz) and, for phone clips, :func:`phone_channel` instead of mu-law only."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float32))
    x = x - float(np.mean(x)) if len(x) else x
    x = lowpass(x, NARROW_HZ if narrow else v1.LOWPASS_HZ)
    x = trim_silence(x, margin_s=0.0)
    if len(x) > MAX_SECONDS * SR:
        length = int(rng.uniform(3.5, MAX_SECONDS) * SR)
        start = int(rng.integers(0, len(x) - length + 1))
        x = x[start : start + length]
    if len(x) < MIN_SECONDS * SR or frame_db(x).max() < -70:
        return None, ""
    x = normalise_loudness(x)
    x = pad_and_floor(x, rng)
    x = vorbis_round_trip(x)
    channel = "clean"
    if phone:
        x, channel = phone_channel(x, rng, tmp)
    return np.clip(x, -1.0, 1.0), channel


class Generators(v1.Generators):
    """v1's generators plus the two game archives; every real source returns 16 kHz."""

    def _bass(self, p: dict, rng) -> np.ndarray:
        audio, rate = read_bass(p["offset"], p["size"], p["flags"])
        return v1.to_16k(audio, rate)

    def _fotaq(self, p: dict, rng) -> np.ndarray:
        audio, rate = read_fotaq(p["offset"], p["size"])
        return v1.to_16k(audio, rate)

    def _source(self, p: dict, rng) -> np.ndarray:
        kind = p.get("source_kind")
        if kind in ("bass", "fotaq"):
            return getattr(self, f"_{kind}")(p, rng)
        return super()._source(p, rng)

    def prerender_festival(self, jobs: list[Job]) -> None:
        """Synthesise many Festival clips per process: one ``festival -b`` script per voice.

        Starting Festival and loading a voice costs ~0.5 s of CPU per clip with ``text2wave``;
        a script per voice pays it once. Clips a script did not produce (Festival crashes on a
        few texts) fall back to ``text2wave`` one by one.
        """
        self._prerendered: dict[tuple[str, str], Path] = getattr(self, "_prerendered", {})
        by_voice: dict[str, list[Job]] = defaultdict(list)
        for job in jobs:
            by_voice[job.params["voice"]].append(job)
        folder = self.tmp / "festival"
        folder.mkdir(exist_ok=True)
        for v, (voice, group) in enumerate(sorted(by_voice.items())):
            encoding = FESTIVAL_ENCODING.get(group[0].params["lang"], "iso-8859-1")
            lines = [f"(voice_{voice})"]
            for k, job in enumerate(group):
                text = job.params["text"].replace("\\", " ").replace('"', " ")
                wav = folder / f"{v}-{k}.wav"
                lines.append(
                    f"(Parameter.set 'Duration_Stretch {1 / job.params['rate']:.3f})\n"
                    f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" \'riff)'
                )
                self._prerendered[(voice, job.params["text"])] = wav
            script = folder / f"{v}.scm"
            script.write_bytes("\n".join(lines).encode(encoding, errors="ignore"))
            log(f"festival: {len(group)} clips of {voice}")
            subprocess.run(
                ["festival", "-b", str(script)], capture_output=True, timeout=3600, check=False
            )

    def _festival(self, p: dict, rng) -> np.ndarray:
        ready = getattr(self, "_prerendered", {}).get((p["voice"], p["text"]))
        if ready is not None and ready.is_file() and ready.stat().st_size > 1000:
            return v1.read_audio(ready)
        txt, wav = self.tmp / "fest.txt", self.tmp / "fest.wav"
        encoding = FESTIVAL_ENCODING.get(p["lang"], "iso-8859-1")
        txt.write_bytes(p["text"].encode(encoding, errors="ignore"))
        stretch = f"(Parameter.set 'Duration_Stretch {1 / p['rate']:.3f})"
        self._run(["text2wave", "-eval", f"(voice_{p['voice']})", "-eval", stretch, str(txt),
                   "-o", str(wav)])  # fmt: skip
        return v1.read_audio(wav)

    _festival_hts = _festival


# ----------------------------------------------------------------------------- narrow share


def narrow_probabilities(jobs: list[Job]) -> dict[tuple[str, str], float]:
    """P(5 kHz low-pass) per (split, label) so that both classes end with NARROW_SHARE.

    The 11 kHz game recordings (and their vocoder copies) are narrow anyway; the other real
    clips get the probability that brings the real class to the fakes' share.
    """
    out = {}
    for split in SPLITS:
        real = [j for j in jobs if j.split == split and j.label == "real"]
        forced = sum(_native_narrow(j) for j in real)
        free = len(real) - forced
        need = NARROW_SHARE * len(real) - forced
        out[(split, "real")] = float(np.clip(need / free, 0.0, 1.0)) if free else 0.0
        fakes = [j for j in jobs if j.split == split and j.label == "fake"]
        forced_f = sum(_native_narrow(j) for j in fakes)
        free_f = len(fakes) - forced_f
        need_f = NARROW_SHARE * len(fakes) - forced_f
        out[(split, "fake")] = float(np.clip(need_f / free_f, 0.0, 1.0)) if free_f else 0.0
    return out


def _native_narrow(job: Job) -> bool:
    return job.kind in ("bass", "fotaq") or job.params.get("source_kind") in ("bass", "fotaq")


# ----------------------------------------------------------------------------- calls


def build_calls(rows: list[dict], out: Path, seed: int, split: str, tmp: Path) -> list[dict]:
    """Pseudo-calls of one voice: 20-45 s of its clean clips of ``split`` joined with 0.3-1.5 s
    pauses (the clip's own noise floor continues), one channel for the whole call."""
    import soundfile as sf

    calls = []
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        if r["subset"] == split and r["condition"] == "clean":
            groups[(r["attack"], r["speaker"])].append(r)
    for (attack, speaker), group in sorted(groups.items()):
        group = shuffled(sorted(group, key=lambda r: r["path"]), seed, f"call:{speaker}:{attack}")
        rng = rng_for(seed, f"calls:{split}:{attack}:{speaker}")
        i = k = 0
        while i < len(group) and k < 12:
            target = rng.uniform(20, 45)
            parts, seconds = [], 0.0
            while i < len(group) and seconds < target:
                y, _ = sf.read(str(out / group[i]["path"]), dtype="float32")
                parts += [y, np.zeros(int(rng.uniform(0.3, 1.5) * SR), np.float32)]
                seconds += len(y) / SR
                i += 1
            if seconds < 15:
                break
            x = np.concatenate(parts)
            floor = 10 ** (rng.uniform(-60, -48) / 20)
            x = x + floor * rng.standard_normal(len(x)).astype(np.float32)
            phone = rng.random() < 0.5
            channel = "clean"
            if phone:
                x, channel = phone_channel(x, rng, tmp)
            rel = f"calls/{split}/{attack}/{speaker}/call{k:02d}.wav"
            v1.write_wav(out / rel, np.clip(x, -1, 1))
            first = group[0]
            calls.append({**first, "path": rel, "subset": split,
                          "condition": "phone" if phone else "clean", "channel": channel,
                          "duration": f"{len(x) / SR:.2f}", "text_key": f"call/{speaker}/{k}",
                          "derived_from": "calls"})  # fmt: skip
            k += 1
    return calls


# ----------------------------------------------------------------------------- run

COLUMNS = [*v1.MANIFEST_COLUMNS, "family", "lang", "channel"]


def write_manifest(path: Path, rows: list[dict], prefix: str, columns: list[str] = COLUMNS) -> None:
    """Rows as CSV (``columns``, other keys ignored), ``prefix`` before every path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": prefix + row["path"]})
    os.replace(tmp, path)


def family_of(attack: str) -> str:
    return "bonafide" if attack.startswith("real-") else FAMILY.get(attack, "other")


def run(args: argparse.Namespace) -> int:
    import soundfile as sf
    from tqdm import tqdm

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    available = detect_available(install=not args.no_install)
    log(f"available sources: {', '.join(sorted(available))}")
    jobs = plan(args.seed, available)
    if args.limit:
        jobs = [j for i, j in enumerate(jobs) if i % max(1, len(jobs) // args.limit) == 0]
    narrow_p = narrow_probabilities(jobs)
    only = {a.strip() for a in args.only.split(",") if a.strip()} if args.only else set()
    state_file = out / (
        "build-state.json" if not only else f"build-state.{'+'.join(sorted(only))}.json"
    )
    main_state = out / "build-state.json"
    state = json.loads(main_state.read_text()) if main_state.is_file() else {}
    if state.get("chain_version") != CHAIN_VERSION:
        for folder in out.iterdir():
            if folder.is_dir():
                shutil.rmtree(folder)
        for stale in out.glob("build-state*.json"):
            stale.unlink()
        state = {"chain_version": CHAIN_VERSION, "clips": {}}
    # Parallel builders (--only) keep their own state files; every run reads them all.
    for part in sorted(out.glob("build-state.*.json")):
        state["clips"].update(json.loads(part.read_text()).get("clips", {}))
    if only:
        state = {"chain_version": CHAIN_VERSION, "clips": dict(state["clips"])}
    done: dict[str, dict] = state.setdefault("clips", {})
    rows, failures, unbuilt = [], Counter(), Counter()
    with tempfile.TemporaryDirectory(prefix="sg-corpus2-") as tmp_name:
        tmp = Path(tmp_name)
        gens = Generators(tmp)
        # Shuffled work order: a build stopped early (--finalize) still has every split and
        # voice in proportion, not the train split of the first generators only.
        mine = shuffled([j for j in jobs if not only or j.attack in only], args.seed, "order")
        if args.listed:
            # Rebuild exactly the clips a manifest lists (the committed v2 manifests come from a
            # --finalize build): the rest of the plan is counted as unbuilt, never made.
            listed = listed_clips(Path(args.listed))
            unbuilt.update(j.attack for j in mine if j.rel_path not in listed)
            mine = [j for j in mine if j.rel_path in listed]
        pending = [
            j for j in mine
            if done.get(j.clip_id) is None
            or (done[j.clip_id].get("channel") and not (out / j.rel_path).is_file())
        ]  # fmt: skip
        if not args.finalize:
            gens.prerender_festival([j for j in pending if j.kind in ("festival", "festival_hts")])
        made = 0
        for job in tqdm(mine, desc="corpus v2", unit="clip", file=sys.stderr, mininterval=30):
            target = out / job.rel_path
            info = done.get(job.clip_id)
            if args.finalize and (info is None or (info.get("channel") and not target.is_file())):
                unbuilt[job.attack] += 1
                continue
            if info is None or (info.get("channel") and not target.is_file()):
                rng = rng_for(args.seed, "v2:" + job.clip_id)
                phone = rng.random() < PHONE_SHARE
                narrow = _native_narrow(job) or rng.random() < narrow_p[(job.split, job.label)]
                try:
                    raw = gens.make(job, rng)
                    clip, channel = finish_clip(raw, rng, narrow=narrow, phone=phone, tmp=tmp)
                except (subprocess.SubprocessError, RuntimeError, ValueError, OSError) as exc:
                    failures[job.attack] += 1
                    log(f"failed {job.clip_id}: {type(exc).__name__}: {exc}")
                    continue
                if clip is None:
                    done[job.clip_id] = {"channel": "", "dropped": "too short or silent"}
                    continue
                v1.write_wav(target, clip)
                info = done[job.clip_id] = {"channel": channel, "narrow": bool(narrow)}
                made += 1
                if made % 20 == 0:
                    _save(state_file, state)
            if not info.get("channel"):
                continue
            rows.append({
                "path": job.rel_path, "label": job.label, "subset": job.split,
                "speaker": job.speaker, "attack": job.attack,
                "condition": "clean" if info["channel"] == "clean" else "phone",
                "duration": f"{sf.info(str(target)).duration:.2f}", "text_key": job.text_key,
                "derived_from": job.derived_from, "family": family_of(job.attack),
                "lang": job.params.get("lang", ""),
                "channel": info["channel"] + ("/5k" if info.get("narrow") else ""),
            })  # fmt: skip
        _save(state_file, state)
        if only:
            log(f"--only {args.only}: clips made; run without --only to write the manifests")
            return 0
        rows.sort(key=lambda r: r["path"])
        calls = []
        if not args.no_calls:
            for split in ("val", "test"):
                calls += build_calls(rows, out, args.seed, split, tmp)
    manifests = Path(args.manifests).resolve()
    prefix = os.path.relpath(out, manifests).replace(os.sep, "/") + "/"
    write_manifest(out / "manifest.csv", rows, "")
    write_manifest(manifests / "manifest.csv", rows, prefix)
    splits = {
        "train": lambda r: r["subset"] == "train",
        "val": lambda r: r["subset"] == "val",
        "test": lambda r: r["subset"] == "test",
        "test-clean": lambda r: r["subset"] == "test" and r["condition"] == "clean",
        "test-phone": lambda r: r["subset"] == "test" and r["condition"] == "phone",
    }
    for name, keep in splits.items():
        write_manifest(manifests / f"{name}.csv", [r for r in rows if keep(r)], prefix)
    for split in ("val", "test"):
        split_calls = [c for c in calls if c["subset"] == split]
        write_manifest(manifests / f"{split}-calls.csv", split_calls, prefix)
        # The audio folder describes itself (corpus v3 reads v2's rows and calls from it).
        write_manifest(out / f"{split}-calls.csv", split_calls, "")
    stats = v1.summarise(rows)
    stats["calls"] = dict(Counter(f"{c['subset']}/{c['label']}" for c in calls))
    stats["failures"] = dict(failures)
    stats["unbuilt"] = dict(unbuilt)  # planned clips a --finalize build did not make
    stats["audit"] = audit(rows)
    (manifests / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True) + "\n")
    log(json.dumps({"failures": failures, "audit": stats["audit"]}, indent=1))
    v1.print_stats(stats)
    return 1 if stats["audit"]["leaks"] else 0


def listed_clips(manifest: Path) -> set[str]:
    """The clip paths (relative to the audio folder) a manifest lists, whatever its prefix."""
    with manifest.open(newline="", encoding="utf-8") as fh:
        paths = [row["path"] for row in csv.DictReader(fh)]
    out = set()
    for path in paths:
        parts = [p for p in Path(path).parts if p != ".."]
        # Committed manifests say ../../../.corpus-v2/<rel>; the audio folder's own say <rel>.
        out.add("/".join(parts[1:] if parts and parts[0].startswith(".corpus") else parts))
    return out


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=0, sort_keys=True))
    os.replace(tmp, path)


def audit(rows: list[dict]) -> dict:
    """No voice in train and val/test (except the single-voice Piper, split by sentence), no
    fake sentence in train and val/test, and the held-out family only in test."""
    shared_ok = {"piper-joe", "fillets-cs-big"}
    speakers = {s: {r["speaker"] for r in rows if r["subset"] == s} for s in SPLITS}
    leaks = []
    both = (speakers["train"] & (speakers["val"] | speakers["test"])) - shared_ok
    if both:
        leaks.append(f"speakers in train and val/test: {sorted(both)}")
    text = {
        s: {r["text_key"] for r in rows if r["subset"] == s and r["label"] == "fake"}
        for s in SPLITS
    }
    crossing = text["train"] & (text["val"] | text["test"])
    if crossing:
        leaks.append(f"{len(crossing)} fake sentences in train and val/test")
    held = {r["subset"] for r in rows if r["family"] == "parametric"}
    if held - {"test"}:
        leaks.append(f"held-out family 'parametric' in {sorted(held - {'test'})}")
    langs = {
        s: dict(Counter(f"{r['label']}:{r['lang']}" for r in rows if r["subset"] == s))
        for s in SPLITS
    }
    return {"leaks": leaks, "labels_by_language": langs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / ".corpus-v2"), help="audio folder")
    parser.add_argument(
        "--manifests", default=str(HERE / "v2"), help="folder for the manifests (committed)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-install", action="store_true", help="never call apt-get or pip")
    parser.add_argument("--no-calls", action="store_true", help="skip the val/test calls")
    parser.add_argument("--limit", type=int, default=0, help="build only ~N clips (smoke test)")
    parser.add_argument(
        "--finalize",
        action="store_true",
        help="make no new clips: write the manifests from the clips finished so far",
    )
    parser.add_argument(
        "--listed",
        metavar="MANIFEST",
        help="make only the clips this manifest lists (e.g. the committed v2/manifest.csv)",
    )
    parser.add_argument(
        "--only",
        metavar="ATTACKS",
        help="make only these attacks' clips (comma list; for parallel builders), no manifests",
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
