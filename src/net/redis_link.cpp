#include "bgw/net/redis_link.hpp"

#include "bgw/obs/log.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cstdint>
#include <exception>
#include <memory>
#include <random>
#include <span>
#include <utility>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_allocator.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/recycling_allocator.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/container/small_vector.hpp>
#include <openssl/ssl.h>

namespace bgw::net {

namespace redis_detail {

using tcp = asio::ip::tcp;
using clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using maybe_reply = std::optional<fleet::reply>;

constexpr std::chrono::milliseconds first_backoff{100};
constexpr std::chrono::milliseconds max_backoff{5000};
constexpr std::chrono::milliseconds min_setup_budget{1000};
constexpr std::uint16_t no_script = 0xffff;
constexpr std::size_t max_scripts = 64;  ///< scripts remembered for a detached NOSCRIPT resend

/// An awaited call's completion handler, its type erased: the one allocation per call, from
/// Asio's per-thread recycling allocator (unless the handler brings its own).
class waiter {
public:
    /// Runs the handler with `r` (posted, never inline: the caller resumes on its own turn of
    /// the event loop, not inside the link's reply loop) and frees this.
    virtual void complete(maybe_reply r) = 0;

protected:
    ~waiter() = default;  // freed by complete() only
};

template <class Handler>
class waiter_for final : public waiter {
    using base_alloc = asio::associated_allocator_t<Handler, asio::recycling_allocator<void>>;
    using alloc = typename std::allocator_traits<base_alloc>::template rebind_alloc<waiter_for>;

public:
    explicit waiter_for(Handler&& h) : handler_(std::move(h)) {}

    static waiter* make(Handler&& h) {
        alloc a(asio::get_associated_allocator(h, asio::recycling_allocator<void>()));
        waiter_for* p = a.allocate(1);
        return new (p) waiter_for(std::move(h));
    }

    void complete(maybe_reply r) override {
        alloc a(asio::get_associated_allocator(handler_, asio::recycling_allocator<void>()));
        Handler h = std::move(handler_);
        this->~waiter_for();
        a.deallocate(this, 1);
        auto ex = asio::get_associated_executor(h);
        asio::post(ex, asio::append(std::move(h), std::move(r)));
    }

private:
    Handler handler_;
};

/// A command in flight, in the order sent.
struct pending {
    clock::time_point deadline;
    waiter* w = nullptr;               ///< an awaited call still waiting for its reply
    bool expired = false;              ///< answered as a timeout: the late reply is dropped
    bool evalsha = false;              ///< a NOSCRIPT reply is handled, not an error
    std::uint16_t script = no_script;  ///< detached EVALSHA: the script to resend with EVAL
    std::vector<std::string> keys;     ///< detached EVALSHA only: for that resend
    std::vector<std::string> args;
};

/// The in-flight commands: a ring that grows by doubling and never shrinks, so a steady
/// pipeline allocates nothing.
class pending_ring {
public:
    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    pending& operator[](std::size_t i) { return slots_[(head_ + i) & (slots_.size() - 1)]; }

    void push_back(pending&& p) {
        if (size_ == slots_.size()) grow();
        (*this)[size_] = std::move(p);
        ++size_;
    }
    pending pop_front() {
        pending p = std::exchange(slots_[head_], pending{});
        head_ = (head_ + 1) & (slots_.size() - 1);
        --size_;
        return p;
    }

private:
    void grow() {
        std::vector<pending> bigger(std::max<std::size_t>(16, 2 * slots_.size()));
        for (std::size_t i = 0; i < size_; ++i) bigger[i] = std::move((*this)[i]);
        slots_ = std::move(bigger);
        head_ = 0;
    }
    std::vector<pending> slots_;  // size a power of two
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

/// One TCP (or TLS) connection and what belongs to it alone. Shared with the operations in
/// flight on it, so a connection given up stays alive until they have all completed.
struct connection {
    explicit connection(const asio::any_io_executor& ex) : sock(ex) {}

    tcp::socket& lowest() { return tls ? tls->next_layer() : sock; }
    void close() {
        error_code ignored;
        lowest().close(ignored);
    }

    tcp::socket sock;  ///< moved into `tls` for rediss
    std::optional<asio::ssl::stream<tcp::socket>> tls;
    std::string writing;  ///< the batch being written
    bool write_active = false;
    bool setup_done = false;  ///< the set-up deadline no longer applies
    bool setup_timed_out = false;
    fleet::resp_reader reader;
    std::array<char, 16 * 1024> rbuf{};
};

/// Name resolution raced against the set-up deadline. Asio's resolver runs getaddrinfo on a
/// thread of its own and cannot interrupt it, so the wait is for a timer the resolver's
/// handler cancels, not for the resolver.
struct resolving {
    explicit resolving(const asio::any_io_executor& ex) : resolver(ex), wake(ex) {}
    tcp::resolver resolver;
    asio::steady_timer wake;
    error_code ec;
    tcp::resolver::results_type results;
    bool done = false;
};

/// The arguments of EVALSHA/EVAL as views (no copies of keys and arguments).
using arg_views = boost::container::small_vector<std::string_view, 16>;

void script_args(arg_views& out,
                 std::string_view verb,
                 std::string_view script,
                 std::string_view numkeys,
                 const std::vector<std::string>& keys,
                 const std::vector<std::string>& args) {
    out.clear();
    out.push_back(verb);
    out.push_back(script);
    out.push_back(numkeys);
    for (const auto& k : keys) out.emplace_back(k);
    for (const auto& a : args) out.emplace_back(a);
}

/// `n` in decimal, in `buf`.
std::string_view decimal(std::array<char, 24>& buf, std::size_t n) {
    auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), n);
    return {buf.data(), static_cast<std::size_t>(end - buf.data())};
}

/// The set-up commands for `s` appended to `out`; their names, for the messages.
std::vector<std::string> hello_commands(const redis_settings& s, std::string& out) {
    std::vector<std::string> what;
    if (!s.password.empty()) {
        // AUTH user pass (Redis 6 ACLs) when the URL names a user, AUTH pass otherwise.
        if (s.url.username.empty()) {
            const std::array<std::string_view, 2> auth{"AUTH", s.password};
            fleet::append_command(out, auth);
        } else {
            const std::array<std::string_view, 3> auth{"AUTH", s.url.username, s.password};
            fleet::append_command(out, auth);
        }
        what.emplace_back("AUTH");
    }
    if (s.url.db != 0) {
        const std::string db = std::to_string(s.url.db);
        const std::array<std::string_view, 2> select{"SELECT", db};
        fleet::append_command(out, select);
        what.push_back("SELECT " + db);
    }
    const std::array<std::string_view, 1> ping{"PING"};
    fleet::append_command(out, ping);
    what.emplace_back("PING");
    return what;
}

bool is_noscript(const fleet::reply& r) {
    return r.is_error() && std::string_view(r.str).starts_with("NOSCRIPT");
}

}  // namespace redis_detail

using namespace redis_detail;

class redis_link::impl : public std::enable_shared_from_this<impl> {
public:
    impl(asio::io_context& ioc, redis_settings s, redis_events& ev)
        : ioc_(ioc),
          settings_(std::move(s)),
          events_(ev),
          deadline_timer_(ioc),
          retry_timer_(ioc),
          rng_(std::random_device{}()) {}

    void start();
    void stop();
    bool up() const { return up_.load(std::memory_order_relaxed); }
    bool can_take() const { return up() && pending_.size() < max_in_flight; }

    /// Queues one command; `w` is the awaited call's waiter (nullptr: detached).
    template <class Args>
    void enqueue(const Args& args, waiter* w, bool evalsha);
    void enqueue_detached_eval(const fleet::lua_script& s,
                               std::vector<std::string> keys,
                               std::vector<std::string> args);

    /// The async operation behind call() and eval(): one command, its reply.
    template <class Args>
    auto async_command(const Args& args, bool evalsha);

private:
    awaitable<void> run(std::shared_ptr<impl> keep);
    awaitable<std::string> establish();
    awaitable<std::string> resolve(std::vector<tcp::endpoint>& out, clock::time_point deadline);
    awaitable<std::string> handshake(connection& c);
    awaitable<std::string> hello(connection& c);
    awaitable<std::string> serve(std::shared_ptr<connection> c);
    void on_reply(fleet::reply&& r);
    void lost();
    void drop(std::string reason);
    void fail_all();
    void schedule_flush();
    void flush();
    void on_written(const std::shared_ptr<connection>& c, const error_code& ec);
    void arm_timer();
    void on_timer(const error_code& ec, std::uint64_t gen);
    std::uint16_t remember(const fleet::lua_script& s);
    void error(std::string_view kind) {
        if (!stopped_) events_.link_error(kind);
    }
    /// A reason fit for a log line: the password, should a server ever echo it, masked.
    std::string scrub(std::string reason) const;
    std::string where() const;

    asio::io_context& ioc_;
    redis_settings settings_;
    redis_events& events_;
    std::atomic<bool> up_{false};
    bool started_ = false;
    bool stopped_ = false;
    bool reported_down_ = false;  ///< link_down told for the current outage

    std::shared_ptr<connection> conn_;  ///< being set up (up_ false) or in service (up_ true)
    std::shared_ptr<resolving> resolving_;
    std::string out_;  ///< commands queued for the next write
    bool flush_posted_ = false;
    pending_ring pending_;
    std::size_t expired_prefix_ = 0;  ///< leading entries already answered as timeouts
    unsigned timeout_streak_ = 0;
    std::string drop_reason_;  ///< why the link closed the connection itself

    asio::steady_timer deadline_timer_;  ///< watches the oldest unexpired command's deadline
    bool timer_armed_ = false;
    std::uint64_t timer_gen_ = 0;  ///< a wait armed before the last reset is stale
    asio::steady_timer retry_timer_;
    std::minstd_rand rng_;
    std::vector<fleet::lua_script> scripts_;
};

// --- queueing ----------------------------------------------------------------------------

template <class Args>
void redis_link::impl::enqueue(const Args& args, waiter* w, bool evalsha) {
    fleet::append_command(out_, std::span(args.data(), args.size()));
    pending p;
    p.deadline = clock::now() + settings_.timeout;
    p.w = w;
    p.evalsha = evalsha;
    pending_.push_back(std::move(p));
    arm_timer();
    schedule_flush();
}

void redis_link::impl::enqueue_detached_eval(const fleet::lua_script& s,
                                             std::vector<std::string> keys,
                                             std::vector<std::string> args) {
    std::array<char, 24> n{};
    arg_views v;
    script_args(v, "EVALSHA", s.sha1, decimal(n, keys.size()), keys, args);
    fleet::append_command(out_, std::span(v.data(), v.size()));
    pending p;
    p.deadline = clock::now() + settings_.timeout;
    p.evalsha = true;
    p.script = remember(s);
    p.keys = std::move(keys);
    p.args = std::move(args);
    pending_.push_back(std::move(p));
    arm_timer();
    schedule_flush();
}

std::uint16_t redis_link::impl::remember(const fleet::lua_script& s) {
    for (std::size_t i = 0; i < scripts_.size(); ++i) {
        if (scripts_[i].sha1 == s.sha1) return static_cast<std::uint16_t>(i);
    }
    if (scripts_.size() >= max_scripts) return no_script;
    scripts_.push_back(s);
    return static_cast<std::uint16_t>(scripts_.size() - 1);
}

/// async_initiate's initiation for one awaited command: formats and queues it at once (the
/// arguments are only borrowed until then).
template <class Args>
struct initiate_command {
    redis_link::impl* link;
    const Args* args;
    bool evalsha;

    template <class Handler>
    void operator()(Handler&& handler) const {
        using decayed = std::decay_t<Handler>;
        waiter* w = waiter_for<decayed>::make(decayed(std::forward<Handler>(handler)));
        if (!link->can_take()) {
            w->complete(std::nullopt);
            return;
        }
        link->enqueue(*args, w, evalsha);
    }
};

template <class Args>
auto redis_link::impl::async_command(const Args& args, bool evalsha) {
    return asio::async_initiate<const asio::use_awaitable_t<>&, void(maybe_reply)>(
        initiate_command<Args>{this, &args, evalsha}, asio::use_awaitable);
}

// Commands queued in one turn of the event loop go out in one write: the flush is posted,
// and while a write is in flight the next batch gathers behind it.
void redis_link::impl::schedule_flush() {
    if (flush_posted_ || (conn_ && conn_->write_active)) return;
    flush_posted_ = true;
    asio::post(ioc_, [self = shared_from_this()] { self->flush(); });
}

void redis_link::impl::flush() {
    flush_posted_ = false;
    if (!up() || !conn_ || conn_->write_active || out_.empty()) return;
    auto c = conn_;
    c->writing.swap(out_);  // both buffers keep their capacity: no allocation per batch
    out_.clear();
    c->write_active = true;
    auto done = [self = shared_from_this(), c](const error_code& ec, std::size_t) {
        self->on_written(c, ec);
    };
    if (c->tls) {
        asio::async_write(*c->tls, asio::buffer(c->writing), std::move(done));
    } else {
        asio::async_write(c->sock, asio::buffer(c->writing), std::move(done));
    }
}

void redis_link::impl::on_written(const std::shared_ptr<connection>& c, const error_code& ec) {
    c->write_active = false;
    c->writing.clear();
    if (c != conn_ || !up()) return;  // a connection already given up
    if (ec) {
        error("connection");
        drop("write failed: " + ec.message());
        return;
    }
    flush();
}

// --- deadlines -----------------------------------------------------------------------------

// One timer per link: deadlines are in queue order (one timeout, a monotonic clock), so the
// oldest unexpired command's deadline is the nearest. Replies do not touch the timer; when it
// fires it expires what is due and re-arms for the next, about once per timeout under load.
void redis_link::impl::arm_timer() {
    if (timer_armed_ || expired_prefix_ >= pending_.size()) return;
    timer_armed_ = true;
    deadline_timer_.expires_at(pending_[expired_prefix_].deadline);
    deadline_timer_.async_wait([self = shared_from_this(), gen = timer_gen_](const error_code& ec) {
        self->on_timer(ec, gen);
    });
}

void redis_link::impl::on_timer(const error_code& ec, std::uint64_t gen) {
    if (gen != timer_gen_) return;
    timer_armed_ = false;
    if (ec || stopped_) return;
    const auto now = clock::now();
    unsigned expired = 0;
    while (expired_prefix_ < pending_.size() && pending_[expired_prefix_].deadline <= now) {
        pending& p = pending_[expired_prefix_++];
        p.expired = true;
        if (p.w != nullptr) std::exchange(p.w, nullptr)->complete(std::nullopt);
        ++expired;
    }
    for (unsigned i = 0; i < expired; ++i) error("timeout");
    timeout_streak_ += expired;
    if (timeout_streak_ >= timeout_streak_limit) {
        drop("no reply within " + std::to_string(settings_.timeout.count()) + " ms, " +
             std::to_string(timeout_streak_) + " times in a row");
        return;
    }
    arm_timer();
}

// --- replies -------------------------------------------------------------------------------

void redis_link::impl::on_reply(fleet::reply&& r) {
    if (pending_.empty()) {
        error("reply");
        drop("a reply to no command: the connection is out of step");
        return;
    }
    pending p = pending_.pop_front();
    if (p.expired) {  // late: its caller was answered "unavailable" already
        --expired_prefix_;
        return;
    }
    timeout_streak_ = 0;
    const bool noscript = is_noscript(r);
    if (r.is_error() && !(noscript && p.evalsha)) error("reply");
    if (p.w != nullptr) {
        p.w->complete(std::move(r));
        return;
    }
    if (noscript && p.script != no_script && can_take()) {
        std::array<char, 24> n{};
        arg_views v;
        script_args(v, "EVAL", scripts_[p.script].body, decimal(n, p.keys.size()), p.keys, p.args);
        enqueue(v, nullptr, false);
    }
}

// The link gives the connection up itself (timeouts, protocol): closing it ends serve().
void redis_link::impl::drop(std::string reason) {
    if (drop_reason_.empty()) drop_reason_ = std::move(reason);
    if (conn_) conn_->close();
}

void redis_link::impl::fail_all() {
    while (!pending_.empty()) {
        pending p = pending_.pop_front();
        if (p.w != nullptr) p.w->complete(std::nullopt);
    }
    expired_prefix_ = 0;
    out_.clear();
}

void redis_link::impl::lost() {
    up_.store(false, std::memory_order_relaxed);
    if (conn_) conn_->close();
    conn_.reset();
    fail_all();
    deadline_timer_.cancel();
    timer_armed_ = false;
    ++timer_gen_;
    timeout_streak_ = 0;
    drop_reason_.clear();
}

// --- connection life -------------------------------------------------------------------------

void redis_link::impl::start() {
    if (started_ || stopped_) return;
    started_ = true;
    asio::co_spawn(ioc_, run(shared_from_this()), [](const std::exception_ptr& e) {
        if (!e) return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            obs::event("redis_link_failed").str("error", ex.what()).error();
        } catch (...) {
            obs::event("redis_link_failed").str("error", "unknown exception").error();
        }
    });
}

void redis_link::impl::stop() {
    if (stopped_) return;
    stopped_ = true;
    up_.store(false, std::memory_order_relaxed);
    retry_timer_.cancel();
    deadline_timer_.cancel();
    timer_armed_ = false;
    ++timer_gen_;
    if (resolving_) {
        resolving_->resolver.cancel();
        resolving_->wake.cancel();
    }
    if (conn_) conn_->close();
    fail_all();
}

// The unnamed parameter keeps the link's state alive as long as this loop runs.
awaitable<void> redis_link::impl::run(std::shared_ptr<impl> /*keep*/) {
    auto backoff = first_backoff;
    while (!stopped_) {
        std::string why = co_await establish();
        if (stopped_) break;
        if (why.empty()) {
            backoff = first_backoff;
            up_.store(true, std::memory_order_relaxed);
            reported_down_ = false;
            events_.link_up();
            why = co_await serve(conn_);
            lost();
            if (stopped_) break;
        } else {
            conn_.reset();
            error("connection");
        }
        if (!reported_down_) {
            reported_down_ = true;
            events_.link_down(scrub(std::move(why)));
        }
        // Full backoff with jitter: the fleet's gateways do not all knock at once.
        std::uniform_int_distribution<long long> pick(backoff.count() / 2, backoff.count());
        retry_timer_.expires_after(std::chrono::milliseconds(pick(rng_)));
        co_await retry_timer_.async_wait(use_nothrow);
        backoff = std::min(backoff * 2, max_backoff);
    }
}

std::string redis_link::impl::where() const {
    const auto& u = settings_.url;
    const bool v6 = u.host.find(':') != std::string::npos;
    return (v6 ? "[" + u.host + "]" : u.host) + ":" + std::to_string(u.port);
}

std::string redis_link::impl::scrub(std::string reason) const {
    const std::string& pw = settings_.password;
    if (pw.empty()) return reason;
    for (auto at = reason.find(pw); at != std::string::npos; at = reason.find(pw, at + 3)) {
        reason.replace(at, pw.size(), "***");
    }
    return reason;
}

// Resolve, connect, TLS, AUTH/SELECT/PING within one deadline. A watchdog closes the socket at
// the deadline, so whichever step is waiting then fails; empty = ready.
awaitable<std::string> redis_link::impl::establish() {
    const auto ex = ioc_.get_executor();
    const auto deadline =
        clock::now() + std::max<std::chrono::milliseconds>(settings_.timeout, min_setup_budget);
    std::vector<tcp::endpoint> endpoints;
    if (std::string why = co_await resolve(endpoints, deadline); !why.empty()) co_return why;
    if (stopped_) co_return "stopped";

    auto c = std::make_shared<connection>(ex);
    conn_ = c;
    asio::steady_timer watchdog(ex, deadline);
    watchdog.async_wait([c](const error_code& ec) {
        if (ec || c->setup_done) return;
        c->setup_timed_out = true;
        c->close();
    });
    const std::string timed_out =
        "connection set-up to " + where() + " took longer than " +
        std::to_string(
            std::max<std::chrono::milliseconds>(settings_.timeout, min_setup_budget).count()) +
        " ms";

    auto [cec, ep] = co_await asio::async_connect(c->sock, endpoints, use_nothrow);
    if (c->setup_timed_out) co_return timed_out;
    if (cec) co_return "connect to " + where() + ": " + cec.message();
    error_code ignored;
    c->sock.set_option(tcp::no_delay(true), ignored);  // small commands, latency-bound

    std::string why = co_await handshake(*c);
    if (why.empty()) why = co_await hello(*c);
    if (c->setup_timed_out) co_return timed_out;
    if (!why.empty()) co_return why;
    if (stopped_) co_return "stopped";
    c->setup_done = true;
    watchdog.cancel();
    co_return std::string();
}

awaitable<std::string> redis_link::impl::resolve(std::vector<tcp::endpoint>& out,
                                                 clock::time_point deadline) {
    const auto& u = settings_.url;
    error_code ec;
    const auto literal = asio::ip::make_address(u.host, ec);
    if (!ec) {  // an IP address: no resolver (and no thread) involved
        out.emplace_back(literal, u.port);
        co_return std::string();
    }
    auto r = std::make_shared<resolving>(ioc_.get_executor());
    resolving_ = r;
    r->wake.expires_at(deadline);
    r->resolver.async_resolve(u.host, std::to_string(u.port),
                              [r](const error_code& rec, tcp::resolver::results_type results) {
                                  r->ec = rec;
                                  r->results = std::move(results);
                                  r->done = true;
                                  r->wake.cancel();
                              });
    co_await r->wake.async_wait(use_nothrow);
    resolving_.reset();
    if (!r->done) {
        r->resolver.cancel();
        co_return "resolving " + u.host + " took too long";
    }
    if (r->ec) co_return "resolve " + u.host + ": " + r->ec.message();
    for (const auto& entry : r->results) out.push_back(entry.endpoint());
    co_return std::string();
}

awaitable<std::string> redis_link::impl::handshake(connection& c) {
    if (!settings_.url.tls) co_return std::string();
    if (!settings_.tls) co_return "rediss:// without a TLS context";
    const std::string& host = settings_.url.host;
    c.tls.emplace(std::move(c.sock), *settings_.tls);
    error_code ec;
    (void)asio::ip::make_address(host, ec);
    // SNI names a host, never an address (RFC 6066 section 3).
    if (ec && SSL_set_tlsext_host_name(c.tls->native_handle(), host.c_str()) != 1) {
        co_return "TLS: cannot set the server name";
    }
    c.tls->set_verify_mode(asio::ssl::verify_peer);
    c.tls->set_verify_callback(asio::ssl::host_name_verification(host));
    auto [hec] = co_await c.tls->async_handshake(asio::ssl::stream_base::client, use_nothrow);
    if (hec) co_return "TLS handshake with " + where() + ": " + hec.message();
    co_return std::string();
}

// AUTH, SELECT and PING in one write; each reply checked in order.
awaitable<std::string> redis_link::impl::hello(connection& c) {
    std::string cmds;
    const std::vector<std::string> what = hello_commands(settings_, cmds);
    auto [wec, wn] = c.tls ? co_await asio::async_write(*c.tls, asio::buffer(cmds), use_nothrow)
                           : co_await asio::async_write(c.sock, asio::buffer(cmds), use_nothrow);
    if (wec) co_return "write to " + where() + ": " + wec.message();
    std::size_t got = 0;
    while (got < what.size()) {
        auto [rec, n] = c.tls ? co_await c.tls->async_read_some(asio::buffer(c.rbuf), use_nothrow)
                              : co_await c.sock.async_read_some(asio::buffer(c.rbuf), use_nothrow);
        if (rec) co_return "read from " + where() + ": " + rec.message();
        c.reader.feed({c.rbuf.data(), n});
        while (got < what.size()) {
            auto r = c.reader.next();
            if (!r) break;
            if (r->is_error()) co_return what[got] + " refused: " + r->str;
            if (what[got] == "PING" && r->str != "PONG") co_return "PING: not answered PONG";
            ++got;
        }
        if (c.reader.failed()) co_return "protocol error: " + c.reader.error();
    }
    co_return std::string();
}

// Reads replies until the connection ends; returns why it ended.
awaitable<std::string> redis_link::impl::serve(std::shared_ptr<connection> c) {
    for (;;) {
        auto [ec, n] = c->tls
                           ? co_await c->tls->async_read_some(asio::buffer(c->rbuf), use_nothrow)
                           : co_await c->sock.async_read_some(asio::buffer(c->rbuf), use_nothrow);
        if (!drop_reason_.empty()) co_return drop_reason_;
        if (ec) {
            error("connection");
            if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
                co_return "connection closed by " + where();
            }
            co_return "read from " + where() + ": " + ec.message();
        }
        c->reader.feed({c->rbuf.data(), n});
        while (auto r = c->reader.next()) {
            on_reply(std::move(*r));
            if (!drop_reason_.empty()) co_return drop_reason_;
        }
        if (c->reader.failed()) {
            error("reply");
            co_return "protocol error: " + c->reader.error();
        }
    }
}

// --- the public face ---------------------------------------------------------------------------

redis_link::redis_link(asio::io_context& ioc, redis_settings s, redis_events& ev)
    : impl_(std::make_shared<impl>(ioc, std::move(s), ev)) {}

redis_link::~redis_link() { impl_->stop(); }

void redis_link::start() { impl_->start(); }
void redis_link::stop() { impl_->stop(); }
bool redis_link::up() const { return impl_->up(); }

awaitable<std::optional<fleet::reply>> redis_link::call(std::vector<std::string> args) {
    if (!impl_->can_take()) co_return std::nullopt;
    co_return co_await impl_->async_command(args, false);
}

awaitable<std::optional<fleet::reply>> redis_link::eval(const fleet::lua_script& s,
                                                        const std::vector<std::string>& keys,
                                                        const std::vector<std::string>& args) {
    if (!impl_->can_take()) co_return std::nullopt;
    std::array<char, 24> n{};
    arg_views v;
    script_args(v, "EVALSHA", s.sha1, decimal(n, keys.size()), keys, args);
    auto r = co_await impl_->async_command(v, true);
    if (r && is_noscript(*r) && impl_->can_take()) {
        script_args(v, "EVAL", s.body, decimal(n, keys.size()), keys, args);
        r = co_await impl_->async_command(v, false);
    }
    co_return r;
}

// By value as declared (callers hand their vector over); only read here, formatted at once.
// NOLINTNEXTLINE(performance-unnecessary-value-param)
void redis_link::send(std::vector<std::string> args) {
    if (impl_->can_take()) impl_->enqueue(args, nullptr, false);
}

void redis_link::eval_detached(const fleet::lua_script& s,
                               std::vector<std::string> keys,
                               std::vector<std::string> args) {
    if (impl_->can_take()) impl_->enqueue_detached_eval(s, std::move(keys), std::move(args));
}

}  // namespace bgw::net
