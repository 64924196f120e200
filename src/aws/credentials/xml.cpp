// XML (STS answers): the text of an element, entities decoded.

#include "bgw/aws/credentials/xml.hpp"

#include "bgw/aws/credentials/common.hpp"

#include <utility>

namespace bgw::aws::cred {
namespace {

std::string xml_unescape(std::string_view s) {
    static constexpr std::pair<std::string_view, char> entities[] = {
        {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    std::string out;
    while (!s.empty()) {
        if (s.front() == '&') {
            bool done = false;
            for (auto [name, c] : entities) {
                if (s.starts_with(name)) {
                    out += c;
                    s.remove_prefix(name.size());
                    done = true;
                    break;
                }
            }
            if (done) continue;
        }
        out += s.front();
        s.remove_prefix(1);
    }
    return out;
}

}  // namespace

/// The text of the first <tag>...</tag> in `xml`. STS answers are small, flat and generated,
/// so a tag search is enough and survives namespaces, whitespace and unknown elements.
std::optional<std::string_view> xml_element(std::string_view xml, std::string_view tag) {
    const std::string open = "<" + std::string(tag) + ">";
    const std::string close = "</" + std::string(tag) + ">";
    auto b = xml.find(open);
    if (b == std::string_view::npos) return std::nullopt;
    b += open.size();
    auto e = xml.find(close, b);
    if (e == std::string_view::npos) return std::nullopt;
    return xml.substr(b, e - b);
}

std::optional<std::string> xml_text(std::string_view xml, std::string_view tag) {
    auto v = xml_element(xml, tag);
    if (!v) return std::nullopt;
    return xml_unescape(trim(*v));
}

}  // namespace bgw::aws::cred
