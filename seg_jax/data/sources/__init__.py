"""Where examples come from: the stored/canonical formats and every dataset's TFDS builder or mapping."""
