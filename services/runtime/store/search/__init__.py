"""Resource search in the database: index rows per resource, SQL from parsed `Criteria`, paging.

- `index`: each write of a resource replaces its rows in `search_tokens`, `search_references`
  and `search_dates` (herald.core.search.index_entries, the same element extraction the
  in-memory matcher uses); a delete removes them.
- `sql`: a search turns every `Condition` into `id IN (SELECT resource_id ...)` (NOT IN for
  `:not` and `:missing=true`) over those rows, built from herald.core.search.search_values, so
  it means what `Criteria.matches` means.
- `paging`: keyset pages in a sort order, only the page asked for loaded.

Which types and parameters are searched here is herald.core.search.DATABASE_SEARCHED and the
parameter lists in herald.core.search: one source for this, the matcher and /metadata.
"""

from herald.runtime.store.search.index import (
    INDEX_SQL,
    SQLITE_UNINDEX,
    UNINDEX_SQL,
    backfill,
    index_arrays,
    index_batch,
    index_rows,
    reindex,
    unindex,
)
from herald.runtime.store.search.paging import (
    Cursor,
    SearchPage,
    SearchRequest,
    Sort,
    search,
    search_ids,
)
from herald.runtime.store.search.sql import condition_clause, criteria_clause

__all__ = [
    "INDEX_SQL",
    "SQLITE_UNINDEX",
    "UNINDEX_SQL",
    "Cursor",
    "SearchPage",
    "SearchRequest",
    "Sort",
    "backfill",
    "condition_clause",
    "criteria_clause",
    "index_arrays",
    "index_batch",
    "index_rows",
    "reindex",
    "search",
    "search_ids",
    "unindex",
]
