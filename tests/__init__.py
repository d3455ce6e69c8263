"""The tests: pytest modules, their helpers (``tests.helpers``) and their own train.py configs (``tests/conf``)."""
