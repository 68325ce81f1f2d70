"""Importers: public e-commerce data sets turned into contract tables.

Each importer returns raw contract tables (:class:`features.sources.RawTable`) and
:class:`ImportNotes`. The caller passes the tables to
:func:`features.loading.validate_tables`, so importer output meets exactly the rules a
shop's own files meet: dirty rows are quarantined with a reason, never dropped here.
"""

from features.importers.common import ImportNotes
from features.importers.completejourney import import_completejourney
from features.importers.rees46 import import_rees46

__all__ = ["ImportNotes", "import_completejourney", "import_rees46"]
