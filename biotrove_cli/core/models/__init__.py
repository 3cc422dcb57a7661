"""Models: what a model spec names (``spec``), the loaders per kind (``loaders``) behind
``load_model`` (``load``), architecture inference (``arch``), building (``build``), the model hub
(``hub``), the published BioTrove-CLIP checkpoints (``download``) and their bundles
(``published``), checkpoint I/O (``checkpoint``), the architecture registry and BioTrove-CLIP
presets (``registry``), and ``export/``."""
