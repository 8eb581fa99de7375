"""An example of a third-party pycalico package, installed from outside the repo."""
