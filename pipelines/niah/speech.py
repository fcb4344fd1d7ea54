"""Spoken needles: sentences synthesised with espeak-ng (Debian package ``espeak-ng``) as
16 kHz mono audio, and the haystack's sound track they are mixed into."""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from typing import Sequence

import numpy as np

from streamvid.errors import MissingDependencyError, StreamvidError

RATE = 16000
NOISE = 0.002      # the haystack's own sound: quiet noise (its footage has no speech)
LEVEL = 0.5        # peak level of a spoken needle
# espeak-ng speaking slowly with short pauses between words, as an announcement is read:
# at its default 175 words a minute Whisper tiny.en misheard 3 of 5 test sentences' last
# word; at 130 with 40 ms gaps none
VOICE, SPEED, GAP = "en-us", 130, 4
VOICE_KEY = f"espeak-ng {VOICE} s{SPEED} g{GAP}"   # part of a spoken needle's cache key


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def synthesise(text: str, *, voice: str = VOICE, speed: int = SPEED, gap: int = GAP) -> np.ndarray:
    """``text`` spoken by espeak-ng: float32 samples at 16 kHz, peak at :data:`LEVEL`."""
    import av

    from streamvid.sources.audio import resampled, resampler

    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MissingDependencyError("spoken needles (speech synthesis)", "espeak-ng") from None
    try:
        out = subprocess.run([exe, "-v", voice, "-s", str(speed), "-g", str(gap), "--stdout", text],
                             check=True, capture_output=True, timeout=600).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise StreamvidError(f"espeak-ng could not speak {text[:40]!r} ({err}); fix: check the "
                             "espeak-ng installation (apt-get install espeak-ng)") from err
    with wave.open(io.BytesIO(out)) as w:
        rate, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), dtype=np.int16)
    frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
    frame.sample_rate = rate
    rs = resampler()
    x = np.concatenate([resampled(rs, frame), resampled(rs, None)])
    peak = float(np.abs(x).max()) if len(x) else 0.0
    return (x * (LEVEL / peak)).astype(np.float32) if peak > 0 else x


class SoundTrack:
    """The haystack's audio, made block by block: quiet seeded noise with the spoken
    needles ``(start_s, samples)`` mixed in at their times."""

    def __init__(self, spoken: Sequence[tuple[float, np.ndarray]], seed: int = 0):
        self.spoken = [(int(round(t * RATE)), s) for t, s in spoken]
        self.seed = seed

    def block(self, a: int, b: int) -> np.ndarray:
        """Samples ``[a, b)``."""
        rng = np.random.default_rng([self.seed, a])
        out = (rng.standard_normal(b - a) * NOISE).astype(np.float32)
        for s0, x in self.spoken:
            lo, hi = max(a, s0), min(b, s0 + len(x))
            if lo < hi:
                out[lo - a:hi - a] += x[lo - s0:hi - s0]
        return np.clip(out, -1.0, 1.0)
