#include "bgw/fleet/resp.hpp"

#include <algorithm>
#include <array>
#include <new>
#include <utility>

#include <hiredis/hiredis.h>
#include <openssl/evp.h>

namespace bgw::fleet {

// The reader builds our `reply` tree itself through hiredis's object callbacks (no redisReply
// to convert and free): a top-level reply is built in the state's `root`, and every other
// object in its parent's `elements`. hiredis hands each callback the read task, whose parent
// task's `obj` is the parent array we returned for it.
struct resp_reader::state {
    struct free_reader {
        void operator()(redisReader* r) const { redisReaderFree(r); }
    };
    std::unique_ptr<redisReader, free_reader> reader;
    reply root;
    std::size_t partial = 0;  ///< bytes of the reply in progress that hiredis already consumed
};

namespace {

using kind = reply::kind;

/// Where the object `task` describes goes, or nullptr (hiredis then fails with "out of memory").
reply* slot_for(const redisReadTask* task) {
    if (task->parent == nullptr) {
        auto* st = static_cast<resp_reader::state*>(task->privdata);
        if (st == nullptr) return nullptr;
        st->root = reply{};
        return &st->root;
    }
    auto* parent = static_cast<reply*>(task->parent->obj);
    // Items arrive in order, so each is appended. Appending may move the earlier (complete)
    // siblings; the array in progress is the parent's last item and its parent is not appended
    // to until it completes, so the pointers hiredis holds stay valid.
    if (task->idx < 0 || static_cast<std::size_t>(task->idx) != parent->elements.size()) {
        return nullptr;
    }
    return &parent->elements.emplace_back();
}

// The callbacks run inside hiredis (C): nothing may be thrown through it.
void* create_string(const redisReadTask* task, char* str, std::size_t len) noexcept {
    try {
        reply* r = slot_for(task);
        if (r == nullptr) return nullptr;
        switch (task->type) {
            case REDIS_REPLY_ERROR:
                r->type = kind::error;
                break;
            case REDIS_REPLY_STATUS:
                r->type = kind::status;
                break;
            default:
                r->type = kind::string;
                break;
        }
        r->str.assign(str, len);
        return r;
    } catch (...) {
        return nullptr;
    }
}

void* create_array(const redisReadTask* task, int elements) noexcept {
    // A negative count other than -1 (nil, which hiredis handles) is not RESP.
    if (elements < 0) return nullptr;
    try {
        reply* r = slot_for(task);
        if (r == nullptr) return nullptr;
        r->type = kind::array;
        // Not the announced count: a 10-byte header may announce 2^31 items that never come
        // (the size bound fails it long before); the vector grows as items arrive.
        r->elements.reserve(std::min(elements, 16));
        return r;
    } catch (...) {
        return nullptr;
    }
}

void* create_integer(const redisReadTask* task, long long value) noexcept {
    try {
        reply* r = slot_for(task);
        if (r == nullptr) return nullptr;
        r->type = kind::integer;
        r->integer = value;
        return r;
    } catch (...) {
        return nullptr;
    }
}

void* create_nil(const redisReadTask* task) noexcept {
    try {
        return slot_for(task);  // a fresh reply is nil
    } catch (...) {
        return nullptr;
    }
}

// Every object lives inside the state's root, which the reader owns: nothing to free.
void free_object(void* /*obj*/) noexcept {}

redisReplyObjectFunctions reply_functions = {create_string, create_array, create_integer,
                                             create_nil, free_object};

/// Formats `args` (strings or string_views) with hiredis and appends the command to `out`.
template <class Args>
void append_formatted(std::string& out, const Args& args) {
    if (args.empty()) return;
    // A gateway command has a handful of arguments: their pointers and lengths stay on the
    // stack unless there are many.
    constexpr std::size_t inline_args = 16;
    std::array<const char*, inline_args> small_argv{};
    std::array<std::size_t, inline_args> small_len{};
    std::vector<const char*> big_argv;
    std::vector<std::size_t> big_len;
    const char** argv = small_argv.data();
    std::size_t* len = small_len.data();
    if (args.size() > inline_args) {
        big_argv.resize(args.size());
        big_len.resize(args.size());
        argv = big_argv.data();
        len = big_len.data();
    }
    for (std::size_t i = 0; i < args.size(); ++i) {
        // An empty view may have a null data(): hiredis would memcpy 0 bytes from it.
        argv[i] = args[i].empty() ? "" : args[i].data();
        len[i] = args[i].size();
    }
    char* cmd = nullptr;
    const int n = redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv, len);
    // hiredis fails only when malloc does; std::string reports that the same way.
    if (n < 0 || cmd == nullptr) throw std::bad_alloc();
    out.append(cmd, static_cast<std::size_t>(n));
    redisFreeCommand(cmd);
}

}  // namespace

std::string format_command(const std::vector<std::string>& args) {
    std::string out;
    append_formatted(out, args);
    return out;
}

void append_command(std::string& out, std::span<const std::string_view> args) {
    append_formatted(out, args);
}

void append_command(std::string& out, std::span<const std::string> args) {
    append_formatted(out, args);
}

resp_reader::resp_reader() : state_(std::make_unique<state>()) {
    state_->reader.reset(redisReaderCreateWithFunctions(&reply_functions));
    if (!state_->reader) throw std::bad_alloc();
    state_->reader->privdata = state_.get();
}

resp_reader::~resp_reader() = default;
resp_reader::resp_reader(resp_reader&&) noexcept = default;
resp_reader& resp_reader::operator=(resp_reader&&) noexcept = default;

void resp_reader::feed(std::string_view bytes) {
    if (failed() || bytes.empty()) return;
    if (redisReaderFeed(state_->reader.get(), bytes.data(), bytes.size()) != REDIS_OK) {
        error_ = "reply reader: out of memory";
    }
}

std::optional<reply> resp_reader::next() {
    if (failed()) return std::nullopt;
    redisReader* r = state_->reader.get();
    // hiredis keeps the unread bytes in buf[pos, len); what a call consumed is the difference
    // (its buffer compaction moves both ends together).
    const std::size_t unread_before = r->len - r->pos;
    void* out = nullptr;
    if (redisReaderGetReply(r, &out) != REDIS_OK) {
        error_ = r->errstr[0] != '\0' ? std::string(r->errstr) : std::string("protocol error");
        return std::nullopt;
    }
    const std::size_t unread_after = r->len - r->pos;
    state_->partial += unread_before - unread_after;
    if (out == nullptr) {
        // Everything unread belongs to the reply in progress.
        if (state_->partial + unread_after > max_reply_bytes) {
            error_ = "a reply larger than 1 MiB";
        }
        return std::nullopt;
    }
    if (std::exchange(state_->partial, 0) > max_reply_bytes) {
        error_ = "a reply larger than 1 MiB";
        return std::nullopt;
    }
    return std::exchange(state_->root, reply{});
}

lua_script::lua_script(std::string script_body) : body(std::move(script_body)) {
    std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
    unsigned int md_len = 0;
    if (EVP_Digest(body.data(), body.size(), md.data(), &md_len, EVP_sha1(), nullptr) != 1) {
        throw std::bad_alloc();  // SHA-1 in the default provider fails only without memory
    }
    static constexpr char hex[] = "0123456789abcdef";
    sha1.reserve(2 * md_len);
    for (unsigned int i = 0; i < md_len; ++i) {
        sha1.push_back(hex[md[i] >> 4]);
        sha1.push_back(hex[md[i] & 0x0f]);
    }
}

}  // namespace bgw::fleet
