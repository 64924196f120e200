#include "bgw/util/json.hpp"

namespace bgw::util {

bool parse_json(rapidjson::Document& doc, std::string_view text, unsigned max_depth) {
    // One linear pass for the nesting depth (brackets inside strings do not count).
    unsigned depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                doc.Parse("");  // leaves doc with a parse error, as for any invalid input
                return false;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    doc.Parse<rapidjson::kParseIterativeFlag>(text.data(), text.size());
    return !doc.HasParseError();
}

}  // namespace bgw::util
