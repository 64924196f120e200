#pragma once
/// RESP2, the Redis wire protocol, through Debian's hiredis 0.14: its command formatter
/// (redisFormatCommandArgv) and its incremental reply reader (redisReader), nothing of its I/O.
/// Bytes in, replies out; the sockets are net::redis_link's.
/// Spec: https://redis.io/docs/reference/protocol-spec/

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

struct redisReader;

namespace bgw::fleet {

/// One Redis reply. `str` holds a string, status or error reply's text; `integer` an integer
/// reply; `elements` an array's items. A nil bulk string and a nil array are both `nil`.
struct reply {
    enum class kind { nil, integer, string, status, error, array };
    kind type = kind::nil;
    long long integer = 0;
    std::string str;
    std::vector<reply> elements;

    bool is_error() const { return type == kind::error; }
};

/// The RESP encoding of one command (an array of bulk strings): binary-safe, any bytes in
/// any argument. An empty `args` gives an empty string (no command).
std::string format_command(const std::vector<std::string>& args);

/// Appends the encoding of one command to `out` (the pipeline's write buffer), so a batch of
/// commands needs no string of its own each.
void append_command(std::string& out, std::span<const std::string_view> args);
void append_command(std::string& out, std::span<const std::string> args);

/// Replies from a byte stream, in order, whatever pieces the bytes come in. A protocol error
/// (bytes that are not RESP, an array nested deeper than hiredis's 7 levels, or one reply
/// larger than max_reply_bytes on the wire) puts the reader in a failed state for good: the
/// connection it reads is then out of step and must be closed.
class resp_reader {
public:
    /// The largest reply accepted: the gateway's replies are integers and short arrays, so
    /// anything near this size is a server or a protocol gone wrong, not data to buffer.
    static constexpr std::size_t max_reply_bytes = std::size_t{1} << 20;

    resp_reader();
    ~resp_reader();
    resp_reader(resp_reader&&) noexcept;
    resp_reader& operator=(resp_reader&&) noexcept;
    resp_reader(const resp_reader&) = delete;
    resp_reader& operator=(const resp_reader&) = delete;

    /// Queues bytes read from the connection (copied). Ignored once failed.
    void feed(std::string_view bytes);
    /// The next complete reply, or nullopt: more bytes needed, or failed() (check it).
    std::optional<reply> next();

    bool failed() const { return !error_.empty(); }
    /// What went wrong, for a log line (never the reply's content).
    const std::string& error() const { return error_; }

    /// Internal to the reader's hiredis callbacks: where a top-level reply is built.
    struct state;

private:
    std::unique_ptr<state> state_;
    std::string error_;
};

/// A Lua script for EVALSHA: its body and the SHA-1 Redis knows it by.
struct lua_script {
    std::string body;
    std::string sha1;  ///< 40 lowercase hex digits of SHA-1(body)

    explicit lua_script(std::string body);
};

}  // namespace bgw::fleet
