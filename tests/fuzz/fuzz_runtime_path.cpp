// Fuzzes the request-target parser (bgw/routing/runtime_path.hpp). Input: the first byte picks
// the method, the rest is the request target as a client sent it. Accepted inputs may also come
// as `.req` text (the SigV4 suite's seeds): then the request line's method and target are used.
// Invariants checked on every accepted target:
// - the wire path is canonical: '/'-separated labels of unreserved characters and %XX escapes;
// - parsing the wire path (plus query) again gives the same operation, model id and wire path
//   (the gateway's output is a fixed point of its parser), with no region prefix;
// - for model operations, model_wire_path(op, model_id) rebuilds the same wire path;
// - the signer leaves such a path unchanged apart from the double encoding (every '%' becomes
//   "%25"): normalisation must never alter what the gateway sends.
// Errors must be 400 ValidationException or 404 UnknownOperationException.
#include "bgw/aws/sigv4.hpp"
#include "bgw/routing/runtime_path.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace http = boost::beast::http;
using namespace bgw::routing;

namespace {

void check(bool ok, const char* what) {
    if (!ok) {
        __builtin_printf("invariant failed: %s\n", what);
        std::abort();
    }
}

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); }

bool is_canonical_path(std::string_view p) {
    if (p.empty() || p.front() != '/') return false;
    for (std::size_t i = 0; i < p.size(); ++i) {
        const char c = p[i];
        const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                                c == '~' || c == '/';
        if (unreserved) continue;
        if (c != '%' || i + 2 >= p.size() || !is_hex(p[i + 1]) || !is_hex(p[i + 2])) return false;
        i += 2;
    }
    return p.find("//") == std::string_view::npos && p.back() != '/';
}

bool is_model_op(operation op) {
    switch (op) {
        case operation::invoke_model:
        case operation::invoke_model_with_response_stream:
        case operation::converse:
        case operation::converse_stream:
        case operation::count_tokens:
            return true;
        default:
            return false;
    }
}

constexpr std::array<http::verb, 6> verbs = {http::verb::post,    http::verb::get,
                                             http::verb::put,     http::verb::head,
                                             http::verb::delete_, http::verb::options};

void one(http::verb method, std::string_view target) {
    auto r = parse_runtime_target(method, target);
    if (!r) {
        const auto& e = r.error();
        check((e.status == http::status::bad_request && e.type == "ValidationException") ||
                  (e.status == http::status::not_found && e.type == "UnknownOperationException"),
              "unexpected error shape");
        check(e.message.size() < 4096, "error message unbounded");
        return;
    }
    const runtime_request& req = *r;
    check(is_canonical_path(req.wire_path), "wire path is not canonical");
    check(req.model_id.size() <= max_label_bytes, "model id too long");
    for (unsigned char c : req.model_id) check(c >= 0x20 && c != 0x7f, "control char in model id");
    check(is_model_op(req.op) != req.model_id.empty(), "model id presence mismatch");
    check(operation_name(req.op) != "Unknown", "unnamed operation");

    std::string again = req.wire_path;
    if (!req.query.empty()) again += "?" + req.query;
    auto r2 = parse_runtime_target(method, again);
    check(static_cast<bool>(r2), "the gateway's own wire path does not parse");
    check(r2->op == req.op, "re-parse changed the operation");
    check(r2->model_id == req.model_id, "re-parse changed the model id");
    check(r2->wire_path == req.wire_path, "re-parse changed the wire path");
    check(r2->query == req.query, "re-parse changed the query");
    check(r2->region_prefix.empty(), "re-parse found a region prefix");
    if (is_model_op(req.op)) {
        check(model_wire_path(req.op, req.model_id) == req.wire_path,
              "model_wire_path disagrees with the parser");
    }

    // What the signer makes of it: only the double encoding, no normalisation.
    bgw::aws::signing_input in;
    in.wire_path = req.wire_path;
    std::string expected;
    for (char c : req.wire_path) expected += c == '%' ? std::string("%25") : std::string(1, c);
    check(bgw::aws::canonical_uri(in) == expected, "signer normalised a gateway wire path");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    // A `.req` seed: "METHOD target HTTP/1.1\n..." (used as the seed corpus).
    const auto line = text.substr(0, text.find('\n'));
    if (const auto sp = line.find(' '); sp != std::string_view::npos && sp < 10 && text[0] != '/') {
        const auto last = line.rfind(' ');
        if (last != sp) {
            const auto method = http::string_to_verb(line.substr(0, sp));
            one(method == http::verb::unknown ? http::verb::post : method,
                line.substr(sp + 1, last - sp - 1));
        }
    }
    one(verbs[data[0] % verbs.size()], text.substr(1));
    return 0;
}
