"""The labeling app's routes, one module per area: `auth` (log in and out), `labeling` (the
labeler's pages and JSON API), `admin` (users, projects, members, item uploads) and `quality`
(the quality page and plot). `dependencies` holds what they share: the app's state, the
database session per request, the caller with the CSRF check, and page rendering."""
