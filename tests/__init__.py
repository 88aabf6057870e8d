"""The test suite, a package (so every folder imports the shared helpers as ``tests.helpers``).

Folders by kind: ``unit/``, ``parity/`` (runtime or export vs an independent reference), ``e2e/`` (CLI,
video, evaluation, end-to-end modes), ``serving/`` (real tritonserver, wire, client, k8s), ``architecture/``
(the house rules); ``helpers/`` holds what several folders use; ``conftest.py`` the shared fixtures.
"""
