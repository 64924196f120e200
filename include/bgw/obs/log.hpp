#pragma once
/// Logging: one line per event, to stdout (the container convention), as a JSON object or as
/// human-readable text. Every line goes through `event`, so every line of a JSON log parses and
/// no field is ever spliced into a line unescaped. Bodies and secrets are never logged anywhere
/// in the gateway: callers pass ids, sizes, names and error texts, never payloads or keys.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace bgw::obs {

enum class log_format { json, text };

/// `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD:
/// what a log line or a metrics label may carry of bytes a client chose.
std::string valid_utf8(std::string_view s);

/// "json" or "text"; false for anything else.

bool parse_log_format(std::string_view s, log_format& out);

/// The spdlog level names: trace, debug, info, warn, error, critical, off.
bool is_log_level(std::string_view level);

/// Configures the default logger: stdout, the given level and format. Returns false for an
/// unknown level name.
bool init_logging(std::string_view level, log_format format = log_format::json);

/// Changes the level of the running logger (SIGHUP reload). False for an unknown name.
bool set_log_level(std::string_view level);
/// Changes the format of the lines written from now on (SIGHUP reload).
void set_log_format(log_format format);

enum class level { debug, info, warn, error, critical };

/// Whether a line at `lvl` would be written: skip building one that would not (the request
/// line is built per request).
bool enabled(level lvl);

/// One log line: an event name and its fields, in the order added.
///
///   json: {"time":"2026-11-23T15:30:41.123Z","level":"info","event":"request","id":"..",...}
///   text: 2026-11-23T15:30:41.123Z INFO  request id=.. operation=Converse status=200 ...
class event {
public:
    explicit event(std::string_view name) : name_(name) {}

    event& str(std::string_view key, std::string_view value);
    event& num(std::string_view key, std::int64_t value);
    event& unum(std::string_view key, std::uint64_t value);
    event& real(std::string_view key, double value);
    event& boolean(std::string_view key, bool value);
    event& list(std::string_view key, std::vector<std::string> values);

    /// The line as `format` renders it at `time` (pure: for tests and for emit()).
    std::string render(log_format format,
                       level lvl,
                       std::chrono::system_clock::time_point time) const;

    /// Writes the line through the default logger if `lvl` is enabled.
    void emit(level lvl) const;
    void debug() const { emit(level::debug); }
    void info() const { emit(level::info); }
    void warn() const { emit(level::warn); }
    void error() const { emit(level::error); }
    void critical() const { emit(level::critical); }

private:
    using value = std::
        variant<std::string, std::int64_t, std::uint64_t, double, bool, std::vector<std::string>>;
    std::string name_;
    std::vector<std::pair<std::string, value>> fields_;
};

}  // namespace bgw::obs
