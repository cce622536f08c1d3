"""``scan --plot``: a PNG with the spectrogram on top and the score timeline below.

Rendered with matplotlib's Agg backend (no display needed). The spectrogram is computed here
with numpy and capped at ~1,500 columns, so a long recording gives a readable, bounded image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from streamguard.policy.verdict import format_threshold
from streamguard.report.scan_report import FileReport

__all__ = ["plot_path_for", "plot_report", "spectrogram"]

_VERDICT_COLOURS = {"fake": "#c0392b", "real": "#1e8449", "inconclusive": "#616a6b"}


def plot_path_for(plot: str, audio_file: str, n_files: int, used: set[Path]) -> Path:
    """Where the PNG for ``audio_file`` goes (the rule is in docs/scan.md, "`--plot PATH`").

    * ``plot`` is an existing directory or ends with a path separator: ``DIR/<stem>.png``;
    * one file scanned: ``plot`` itself;
    * several files: the file stem inserted before the suffix, ``report.png`` ->
      ``report-<stem>.png``.
    A name already used in this run gets ``-2``, ``-3``, ... so no plot overwrites another.
    """
    target = Path(plot)
    stem = Path(audio_file).stem
    if plot.endswith((os.sep, "/")) or target.is_dir():
        path = target / f"{stem}.png"
    elif n_files == 1:
        path = target
    else:
        suffix = target.suffix or ".png"
        path = target.with_name(f"{target.stem}-{stem}{suffix}")
    candidate, i = path, 2
    while candidate in used:
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        i += 1
    used.add(candidate)
    return candidate


def spectrogram(
    x: np.ndarray, sample_rate: int, max_columns: int = 1500
) -> tuple[np.ndarray, float, float]:
    """Log-power spectrogram ``[freq, time]`` in dB, plus its duration and top frequency."""
    nfft = 512 if sample_rate >= 16_000 else 256
    x = np.asarray(x, dtype=np.float32)
    if x.size < nfft:
        x = np.pad(x, (0, nfft - x.size))
    hop = max(nfft // 4, -(-(x.size - nfft) // max_columns))
    frames = np.lib.stride_tricks.sliding_window_view(x, nfft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(nfft).astype(np.float32), axis=1)) ** 2
    db = 10.0 * np.log10(power.T + 1e-10)
    return db, x.size / sample_rate, sample_rate / 2


def plot_report(report: FileReport, audio: np.ndarray, sample_rate: int, path: Path) -> Path:
    """Write the PNG for one file; ``audio`` is its mono mix at ``sample_rate``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    duration = max(report.duration, 1e-3)
    fig, (ax_spec, ax_score) = plt.subplots(
        2, 1, figsize=(11, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    try:
        db, spec_seconds, top_hz = spectrogram(audio, sample_rate)
        vmax = max(float(db.max()), -30.0)  # digital silence stays dark, not saturated
        ax_spec.imshow(
            db,
            origin="lower",
            aspect="auto",
            extent=(0.0, spec_seconds, 0.0, top_hz),
            cmap="magma",
            vmin=vmax - 80.0,
            vmax=vmax,
            interpolation="nearest",
        )
        ax_spec.set_ylabel("frequency (Hz)")
        verdict = report.verdict
        means = [t.mean_p_fake for t in report.tracks if t.mean_p_fake is not None]
        if len(report.tracks) == 1:
            detail = f"mean p_fake {means[0]:.2f}, " if means else ""
        else:
            detail = (
                "track means "
                + ", ".join(
                    "–" if t.mean_p_fake is None else f"{t.mean_p_fake:.2f}" for t in report.tracks
                )
                + "; "
            )
        ax_spec.set_title(
            f"{Path(report.file).name} — verdict: {verdict.upper()} "
            f"({detail}threshold {format_threshold(report.threshold)}, model {report.model})",
            color=_VERDICT_COLOURS[verdict],
            fontsize=12,
            fontweight="bold",
        )

        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, track in enumerate(report.tracks):
            colour = colours[i % len(colours)]
            if not track.windows:
                continue
            for w in track.windows:  # each window's span, faint
                ax_score.hlines(w.p_fake, w.start, w.end, colors=colour, alpha=0.25, lw=4)
            centres = [(w.start + w.end) / 2 for w in track.windows]
            ax_score.plot(
                centres,
                [w.p_fake for w in track.windows],
                marker="o",
                ms=4,
                color=colour,
                label=f"track {track.track} ({track.verdict})",
            )
        ax_score.axhline(
            report.threshold,
            color=_VERDICT_COLOURS["fake"],
            ls="--",
            lw=1.2,
            label=f"threshold {format_threshold(report.threshold)}",
        )
        if not any(t.windows for t in report.tracks):
            ax_score.text(
                duration / 2, 0.2, "no window scored (not enough speech)",
                ha="center", va="center", color=_VERDICT_COLOURS["inconclusive"],
            )  # fmt: skip
        ax_score.set_ylim(0.0, 1.0)
        ax_score.set_xlim(0.0, duration)
        ax_score.set_ylabel("P(fake)")
        ax_score.set_xlabel("call time (s)  —  dots at window centres, bars span each window")
        ax_score.grid(alpha=0.3)
        ax_score.legend(loc="upper right", fontsize=8, framealpha=0.8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
