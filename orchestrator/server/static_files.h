// Static files of the dashboard, served at / to anyone who can reach the HTTP port, with no
// token. So the one rule here is containment: a request can only ever name a regular file
// inside the web directory.
//
// ResolveStaticPath decides from the request path alone which file that is. The path is
// split into segments; an empty path or one ending in '/' means index.html; a segment that
// is "..", ".", holds a NUL, a backslash or starts with '.' (hidden files, "..." tricks) is
// refused; the candidate is then resolved with realpath(3), so symbolic links are followed
// and the result must still lie inside the (resolved) web directory. Anything else is
// nullopt, which the HTTP layer answers with 404 whatever the reason, so a caller learns
// nothing about the filesystem outside.
//
// Pure apart from reading the filesystem; may be called from any thread.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace lockstep {

// `web_dir_real`: the web directory as returned by realpath(3) (absolute, no symlinks, no
// trailing '/'). `request_path`: the URL path after percent-decoding (as HTTP servers hand
// it over), e.g. "/app.js", "//etc/passwd", "/../x". Returns the real path of the file to
// serve, or nullopt.
std::optional<std::string> ResolveStaticPath(const std::string& web_dir_real,
                                             std::string_view request_path);

// The Content-Type for a file name, by extension; "application/octet-stream" if unknown.
const char* StaticContentType(std::string_view file_name);

// What GET `request_path` answers with: the file ResolveStaticPath names, read whole, and its
// Content-Type; nullopt (404) if there is none, if it cannot be read, or if the path is under
// /api/ or /hooks/ (those are never files, whatever the web directory holds).
struct StaticFile {
  std::string body;
  const char* content_type = "application/octet-stream";
};
std::optional<StaticFile> LoadStaticFile(const std::string& web_dir_real,
                                         std::string_view request_path);

}  // namespace lockstep
