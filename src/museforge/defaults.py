"""Defaults and bounds that the library, the CLI and the web app share, in a module that imports nothing heavy:
the CLI reads them while it builds its options, and ``museforge --help`` must not wait for torch."""

# MuseMorphose transfers amplify the asked change of classes by this much (`Guidance`): on 12 test pieces it
# raised the shipped model's ρ from .86/.74 to .93/.89 (rhythm/polyphony) for a chroma similarity .01 lower and
# twice the time.
DEFAULT_GUIDANCE = 1.0
MAX_GUIDANCE = 4.0

# Rhythmic-intensity and polyphony are each quantised into this many classes (MuseMorphose's 8).
N_ATTRIBUTE_CLASSES = 8

# Magenta's Performance RNN note-density bins (notes per second): class k holds densities below bin k.
DENSITY_BINS: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
N_DENSITY_CLASSES = len(DENSITY_BINS) + 1  # 8

# Seeds are 31-bit so every store and JSON reader keeps them exact.
MAX_SEED = 2**31 - 1
