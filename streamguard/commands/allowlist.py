"""``streamguard allowlist add|list|remove|check``: the operator's own synthetic voices.

``add NAME FILES...`` enrols a voice from a few clips of it (each file one embedding; a
stereo file's channels are averaged); adding to an existing name adds clips. ``check FILES...``
prints each file's similarity to every enrolled voice and whether it would be allowlisted (what
to try before trusting a threshold). The daemon reads the folder at start (restart it, or
SIGHUP does not: the encoder loads once). docs/operations.md, "Allow-list".
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "enrol, list, remove and check the operator's own synthetic voices (never alerted on)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser("add", help="enrol a voice from a few clips of it")
    add.add_argument("name", metavar="NAME", help="letters, digits and -_. (e.g. ivr-main)")
    add.add_argument("files", metavar="FILE", nargs="+", type=Path)
    ls = sub.add_parser("list", help="the enrolled voices")
    rm = sub.add_parser("remove", help="forget a voice")
    rm.add_argument("name", metavar="NAME")
    check = sub.add_parser("check", help="similarity of files to every enrolled voice")
    check.add_argument("files", metavar="FILE", nargs="+", type=Path)
    for p in (add, ls, rm, check):
        p.add_argument("--config", type=Path, help="the daemon's config ([allowlist])")


def _allowlist(settings):
    from streamguard.allowlist import AllowList
    from streamguard.allowlist.encoder import ENCODER_NAME

    a = settings.allowlist
    return AllowList(a.resolved_path(settings.events), threshold=a.threshold, encoder=ENCODER_NAME)


def _embed_files(files: list[Path]):
    from streamguard.allowlist.encoder import load_encoder
    from streamguard.audio.file import decode_mono

    encoder = load_encoder()
    return [encoder.embed(decode_mono(f, 16_000)) for f in files]


def run(args: argparse.Namespace) -> int:
    from streamguard.config import load_config

    settings = load_config(args.config)
    allowlist = _allowlist(settings)
    if args.action == "list":
        if not allowlist.voices:
            print(f"no enrolled voices in {allowlist.root}")
        for voice in allowlist.voices.values():
            print(f"{voice.name:<24} {len(voice.clips)} clips  ({', '.join(voice.clips)[:80]})")
        return 0
    if args.action == "remove":
        allowlist.remove(args.name)
        print(f"removed {args.name} (restart the daemon for it to take effect)")
        return 0
    embeddings = _embed_files(args.files)
    if args.action == "add":
        voice = allowlist.add(args.name, embeddings, [f.name for f in args.files])
        print(
            f"enrolled {voice.name}: {len(voice.clips)} clips in {allowlist.root} "
            "(restart the daemon for it to take effect)"
        )
        return 0
    for file, embedding in zip(args.files, embeddings, strict=True):
        sims = allowlist.similarities(embedding)
        match = allowlist.match(embedding)
        shown = " ".join(f"{n}={s:.3f}" for n, s in sorted(sims.items(), key=lambda x: -x[1]))
        verdict = f"ALLOWLISTED as {match.name}" if match else "not allowlisted"
        print(f"{file}: {verdict}  {shown}")
    return 0
