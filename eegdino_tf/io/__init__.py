"""Real EEG in, embeddings out: EDF/BDF files, MNE ``Raw`` objects and arrays.

What happens to a recording (each step is written to :attr:`Recording.steps` and logged):

1. **Open** an EDF/BDF file (header split into its named fields, each validated, and the
   file's size checked against the record layout they declare; data records are read on
   demand, a chunk at a time), an ``mne.io.Raw`` (any format MNE reads; ``preload=False``
   works) or a NumPy array with its sampling rate and channel names.
2. **Pick channels** by name, in the order given (that order is the model's channel-slot
   order: it must match the order the weights were trained or finetuned with). Matching is
   case-insensitive and tolerant of the usual spellings (``EEG FP1-REF``, ``FP1-LE``,
   ``EEG Fp1``, ``Fp1-A1``; ``T3``/``T7``, ``T4``/``T8``, ``T5``/``P7``, ``T6``/``P8``).
   Non-EEG signals (ECG, EOG, EMG, annotations, ...) are never matched by such spellings.
   Without ``channels`` the 19 standard 10-20 channels are used, in TUH order
   (:data:`STANDARD_CHANNELS`); if the source lacks any of them that is an error asking for
   an explicit list, because guessing a channel order would silently feed the wrong
   channel-embedding slots.
3. **Convert to microvolts** from the physical unit (V, mV, uV/µV, nV).
4. **Resample to 200 Hz** with ``scipy.signal.resample_poly`` (anti-aliasing polyphase FIR,
   exact rational factors, e.g. 256 -> 200 Hz is up 25 / down 32), each channel from its own
   rate when the picked EDF/BDF channels differ (1000 and 975 Hz, say). Long recordings stream
   through in chunks; each chunk is resampled with enough neighbouring input on both sides
   that the result equals resampling the whole signal (to float64 rounding).
5. **Cut windows** of ``window`` whole seconds every ``stride`` seconds (default: no
   overlap). A tail shorter than a window is dropped, or zero-padded with ``pad_tail``.
6. **Encode** the windows in batches with :func:`encode_recording`.

No filtering or re-referencing is done: apply those (e.g. with MNE) before encoding if the
weights expect them. Recordings with large DC offsets (BioSemi BDF files, for one) need a
high-pass filter first: the model sees the microvolts as they are.

One module per step: :mod:`~eegdino_tf.io.edf` (the EDF/BDF reader),
:mod:`~eegdino_tf.io.channels` (labels, picking, units), :mod:`~eegdino_tf.io.sources`
(:class:`Recording`, :func:`open_recording` and its adapters), :mod:`~eegdino_tf.io.windows`
(resampling, windows) and :mod:`~eegdino_tf.io.encode` (:func:`encode_recording`).
Importing them does not import TensorFlow.
"""

from eegdino_tf.io.channels import STANDARD_CHANNELS, canonical_channel_name
from eegdino_tf.io.encode import encode_recording
from eegdino_tf.io.sources import Recording, open_recording
from eegdino_tf.io.windows import CHUNK_SECONDS

__all__ = [
    "CHUNK_SECONDS",
    "STANDARD_CHANNELS",
    "Recording",
    "canonical_channel_name",
    "encode_recording",
    "open_recording",
]
