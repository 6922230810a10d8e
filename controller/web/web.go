// Package web holds the dashboard's templates, stylesheet and script,
// embedded in the controller binary: the dashboard needs no build step and
// loads nothing from elsewhere.
//
// templates/ are html/template files. layout.html defines "layout" (the
// whole page) and "live" (the part the script replaces on each refresh);
// partials.html the pieces several pages share; each other file defines
// "content" for one page. static/ is served as is under /ui/static/.
package web

import "embed"

// FS holds templates/ and static/.
//
//go:embed templates static
var FS embed.FS
