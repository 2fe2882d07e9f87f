"""The directory `cmdrdata-run` puts first on `PYTHONPATH`; it holds only our `sitecustomize` module.

It is a package only so linters and type checkers can name the module; Python itself finds
`sitecustomize.py` here through `PYTHONPATH`, never through this package.
"""
