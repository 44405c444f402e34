"""Sphinx configuration: ``make docs`` (warnings are errors), ``make docs-serve`` to read it.

The app is imported (autodoc, and the reference pages generated from its code by
``_ext/drs_docs.py``) with the Django settings of ``_ext/drs_docs_settings.py``.
"""

import os
import sys
from pathlib import Path

import django

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]
os.environ["DJANGO_SETTINGS_MODULE"] = "drs_docs_settings"
django.setup()

import django_remote_submission  # noqa: E402

project = "django-remote-submission"
author = "the django-remote-submission authors"
copyright = "the django-remote-submission authors"
release = django_remote_submission.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinx.ext.graphviz",
    "sphinx.ext.doctest",
    "celery.contrib.sphinx",
    "drs_docs",
]
exclude_patterns = ["_build"]
templates_path = []
root_doc = "index"

html_theme = "furo"
html_title = f"django-remote-submission {release}"
html_static_path = []
html_copy_source = False

# Autodoc: the signatures and docstrings of the code, in source order.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autoclass_content = "both"
# celery.contrib.sphinx documents tasks with the class-based autodoc of Sphinx < 9.
autodoc_use_legacy_class_based = True

graphviz_output_format = "svg"

# Every internal reference must resolve (-W makes a dangling one an error).
nitpicky = False
suppress_warnings = []

# Doctests run against the app's modules with the same settings (no database).
doctest_global_setup = "import django_remote_submission"
