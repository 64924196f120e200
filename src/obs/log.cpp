#include "bgw/obs/log.hpp"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace bgw::obs {
namespace {

std::atomic<log_format> current_format{log_format::json};

spdlog::level::level_enum to_spdlog(level l) {
    switch (l) {
        case level::debug:
            return spdlog::level::debug;
        case level::info:
            return spdlog::level::info;
        case level::warn:
            return spdlog::level::warn;
        case level::error:
            return spdlog::level::err;
        case level::critical:
            return spdlog::level::critical;
    }
    return spdlog::level::info;
}

std::string_view level_name(level l, bool upper) {
    switch (l) {
        case level::debug:
            return upper ? "DEBUG" : "debug";
        case level::info:
            return upper ? "INFO" : "info";
        case level::warn:
            return upper ? "WARN" : "warn";
        case level::error:
            return upper ? "ERROR" : "error";
        case level::critical:
            return upper ? "CRIT" : "critical";
    }
    return "info";
}

/// RFC 3339 in UTC with milliseconds: 2026-11-23T15:30:41.123Z
std::string rfc3339_ms(std::chrono::system_clock::time_point t) {
    auto secs = std::chrono::floor<std::chrono::seconds>(t);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - secs).count();
    std::time_t tt = std::chrono::system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[96];  // room for any int GCC imagines in each field
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms));
    return buf;
}

/// A text-format value: bare when it is one plain word, else quoted with escapes, so a line
/// splits back into its fields and a hostile value cannot forge another field or line.
void append_text_value(std::string& out, std::string_view v) {
    bool plain = !v.empty();
    for (unsigned char c : v) {
        if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) {
            plain = false;
            break;
        }
    }
    if (plain) {
        out.append(v);
        return;
    }
    out.push_back('"');
    for (unsigned char c : v) {
        if (c == '"' || c == '\\') {
            out.push_back('\\');
            out.push_back(static_cast<char>(c));
        } else if (c < ' ' || c == 0x7f) {
            char esc[8];
            std::snprintf(esc, sizeof esc, "\\x%02x", c);
            out.append(esc);
        } else {
            out.push_back(static_cast<char>(c));
        }
    }
    out.push_back('"');
}

using json_writer = rapidjson::Writer<rapidjson::StringBuffer>;

void put_json_string(json_writer& w, std::string_view s) {
    w.String(s.data(), static_cast<rapidjson::SizeType>(s.size()));
}

/// A field's value in the JSON line, by its type.
void put_json_value(json_writer& w, const std::string& s) { put_json_string(w, s); }
void put_json_value(json_writer& w, std::int64_t i) { w.Int64(i); }
void put_json_value(json_writer& w, std::uint64_t u) { w.Uint64(u); }
void put_json_value(json_writer& w, double d) { w.Double(d); }
void put_json_value(json_writer& w, bool b) { w.Bool(b); }
void put_json_value(json_writer& w, const std::vector<std::string>& items) {
    w.StartArray();
    for (const auto& item : items) put_json_string(w, item);
    w.EndArray();
}

/// A field's value in the text line, by its type: numbers as they are (doubles to the
/// millisecond), text quoted when it needs to be, a list joined with "; ".
void append_text_field(std::string& out, const std::string& s) { append_text_value(out, s); }
void append_text_field(std::string& out, std::int64_t i) { out.append(std::to_string(i)); }
void append_text_field(std::string& out, std::uint64_t u) { out.append(std::to_string(u)); }
void append_text_field(std::string& out, double d) {
    char num[32];
    std::snprintf(num, sizeof num, "%.3f", d);
    out.append(num);
}
void append_text_field(std::string& out, bool b) { out.append(b ? "true" : "false"); }
void append_text_field(std::string& out, const std::vector<std::string>& items) {
    std::string joined;
    for (const auto& item : items) {
        if (!joined.empty()) joined.append("; ");
        joined.append(item);
    }
    append_text_value(out, joined);
}

}  // namespace

std::string valid_utf8(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if (c < 0x80) {
            len = 1;
            cp = c;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            cp = c & 0x07u;
        }
        bool ok = len != 0 && i + len <= n;
        for (std::size_t k = 1; ok && k < len; ++k) {
            ok = (p[i + k] & 0xc0) == 0x80;
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8 either.
        if (ok && ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
                   (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff))
            ok = false;
        if (!ok) {
            out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER, for the one bad byte
            ++i;
            continue;
        }
        out.append(s.substr(i, len));
        i += len;
    }
    return out;
}

bool parse_log_format(std::string_view s, log_format& out) {
    if (s == "json") {
        out = log_format::json;
    } else if (s == "text") {
        out = log_format::text;
    } else {
        return false;
    }
    return true;
}

bool is_log_level(std::string_view level) {
    auto lvl = spdlog::level::from_str(std::string(level));
    return !(lvl == spdlog::level::off && level != "off");
}

bool init_logging(std::string_view level, log_format format) {
    if (!is_log_level(level)) return false;
    current_format = format;
    auto logger = spdlog::get("bgw");
    if (!logger) logger = spdlog::stdout_logger_mt("bgw");
    logger->set_level(spdlog::level::from_str(std::string(level)));
    logger->set_pattern("%v");  // event::render writes the time and level itself
    logger->flush_on(spdlog::level::debug);
    spdlog::set_default_logger(logger);
    return true;
}

bool set_log_level(std::string_view level) {
    if (!is_log_level(level)) return false;
    spdlog::default_logger()->set_level(spdlog::level::from_str(std::string(level)));
    return true;
}

bool enabled(level lvl) { return spdlog::default_logger_raw()->should_log(to_spdlog(lvl)); }

void set_log_format(log_format format) { current_format = format; }

event& event::str(std::string_view key, std::string_view v) {
    // A log shipper (and the JSON writer) expects UTF-8: a client's bytes may be anything.
    fields_.emplace_back(std::string(key), valid_utf8(v));
    return *this;
}
event& event::num(std::string_view key, std::int64_t v) {
    fields_.emplace_back(std::string(key), v);
    return *this;
}
event& event::unum(std::string_view key, std::uint64_t v) {
    fields_.emplace_back(std::string(key), v);
    return *this;
}
event& event::real(std::string_view key, double v) {
    fields_.emplace_back(std::string(key), v);
    return *this;
}
event& event::boolean(std::string_view key, bool v) {
    fields_.emplace_back(std::string(key), v);
    return *this;
}
event& event::list(std::string_view key, std::vector<std::string> v) {
    for (auto& item : v) item = valid_utf8(item);
    fields_.emplace_back(std::string(key), std::move(v));
    return *this;
}

std::string event::render(log_format format,
                          level lvl,
                          std::chrono::system_clock::time_point time) const {
    const std::string when = rfc3339_ms(time);
    if (format == log_format::json) {
        rapidjson::StringBuffer buf;
        rapidjson::Writer<rapidjson::StringBuffer> w(buf);
        w.StartObject();
        put_json_string(w, "time");
        put_json_string(w, when);
        put_json_string(w, "level");
        put_json_string(w, level_name(lvl, false));
        put_json_string(w, "event");
        put_json_string(w, name_);
        for (const auto& [key, v] : fields_) {
            put_json_string(w, key);
            std::visit([&](const auto& x) { put_json_value(w, x); }, v);
        }
        w.EndObject();
        return std::string(buf.GetString(), buf.GetSize());
    }
    std::string out = when;
    out.push_back(' ');
    auto lname = level_name(lvl, true);
    out.append(lname);
    out.append(6 - lname.size(), ' ');
    out.append(name_);
    for (const auto& [key, v] : fields_) {
        out.push_back(' ');
        out.append(key);
        out.push_back('=');
        std::visit([&](const auto& x) { append_text_field(out, x); }, v);
    }
    return out;
}

void event::emit(level lvl) const {
    auto logger = spdlog::default_logger_raw();
    const auto sl = to_spdlog(lvl);
    if (!logger->should_log(sl)) return;
    logger->log(sl, "{}", render(current_format.load(), lvl, std::chrono::system_clock::now()));
}

}  // namespace bgw::obs
