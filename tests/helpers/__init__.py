"""What the tests share: train.py drivers (``cli_runs``) and the callbacks and task models their configs name by
class path (``tests.helpers.kill_switch.KillSwitch``, ...), importable in the train.py subprocesses the tests start
(``cli_runs.train`` puts the repository first on their ``PYTHONPATH``)."""
