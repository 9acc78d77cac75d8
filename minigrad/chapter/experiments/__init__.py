"""The chapter's exercises (section 4.6.7) as experiments: ``minigrad-dropout-experiments NAME``.

One file per concern: ``settings`` (what a run trains: the noise, its strength, weight decay), ``runs``
(the data, training runs, and the cache that trains each run once), ``summaries`` (statistics over seeds
and the sentences that report them), ``figures`` (the plots, through ``minigrad.viz``), ``exercises`` (one
function per exercise). The command line is ``minigrad/chapter/dropout_experiments.py``.
"""
