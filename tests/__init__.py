"""structops' test suite (a package, so that test modules share helpers with ``from ._helpers import ...``)."""
