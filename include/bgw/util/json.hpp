#pragma once
/// JSON from outside (client bodies, upstream answers, metadata services, journal lines) parsed
/// without recursion: RapidJSON's default parser recurses once per nesting level, so a 5 MB
/// body of '[' overflowed the stack and killed the process (found while fuzzing, issue 10).

#include <string_view>

#include <rapidjson/document.h>

namespace bgw::util {

/// Deeper than this is refused before parsing: no request Bedrock takes nests so deep, and the
/// depth also bounds the recursion of anything that later walks the document (Accept, copies).
inline constexpr unsigned max_json_depth = 128;

/// Parses `text` into `doc` with constant stack. False (and `doc.HasParseError()`) for invalid
/// JSON or JSON nested deeper than `max_depth`.
bool parse_json(rapidjson::Document& doc,
                std::string_view text,
                unsigned max_depth = max_json_depth);

}  // namespace bgw::util
