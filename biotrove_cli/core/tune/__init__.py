"""``biotrove tune``: hyperparameter search on Ray Tune, each trial a Ray Train run of
biotrove's own Trainer.

* :mod:`.space`: the search space (YAML over dotted config keys), checked before Ray starts;
* :mod:`.search`: the search's plan (:class:`~.search.SearchConfig`), Ray, the Tuner, resume;
* :mod:`.trial`: the Tune trial function (a Ray Train driver) and the Ray Train worker loop;
* :mod:`.monitor`: the driver's Tune callback (progress, stopped trials, placement groups);
* :mod:`.events`: the progress hooks the CLI implements;
* :mod:`.results`: the trials as records, the best trial, ``best.yaml``;
* :mod:`.guard`: no process of a local Ray cluster outlives the command.

Nothing here imports Ray at import time except :mod:`.monitor` (imported once Ray runs).
"""
