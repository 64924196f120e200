// Credentials refreshed in the background, and the real I/O the providers use: environment,
// files, bounded HTTP(S) and credential_process.

#include "bgw/net/credential_source.hpp"

#include "bgw/net/exchange.hpp"
#include "bgw/net/upstream.hpp"
#include "bgw/obs/log.hpp"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace bgw::net {
namespace {

namespace http = beast::http;
using namespace std::chrono_literals;

error unavailable(std::string message) {
    return {http::status::service_unavailable, "ServiceUnavailableException", std::move(message)};
}

std::string iso(sys_seconds t) {
    auto s = aws::format_amz_date(t);  // 20261123T131700Z
    return s.substr(0, 4) + "-" + s.substr(4, 2) + "-" + s.substr(6, 2) + "T" + s.substr(9, 2) +
           ":" + s.substr(11, 2) + ":" + s.substr(13, 2) + "Z";
}

void log_credentials(const aws::timed_credentials& c, std::string_view event) {
    obs::event(event)
        .str("source", c.source)
        .str("access_key", aws::redacted_key_id(c.creds.access_key_id))
        .str("expires", c.expiration ? iso(*c.expiration) : "never")
        .info();
}

}  // namespace

sys_seconds refresh_time(sys_seconds obtained, sys_seconds expiration, double jitter) {
    const auto lifetime = expiration - obtained;
    if (lifetime < 20min) return expiration - lifetime / 4;
    return expiration - 5min - std::chrono::seconds(static_cast<int>(jitter * 60));
}

credential_source::credential_source(resolver resolve, clock_fn now)
    : resolve_(std::move(resolve)), now_(std::move(now)) {}

credential_source::~credential_source() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

result<void> credential_source::load() {
    {
        std::lock_guard lock(mutex_);
        next_ = now_();  // due at once
    }
    tick();
    std::lock_guard lock(mutex_);
    if (!current_) return unavailable(last_error_);
    return {};
}

std::shared_ptr<const aws::timed_credentials> credential_source::current() const {
    std::lock_guard lock(mutex_);
    return current_;
}

result<std::shared_ptr<const aws::timed_credentials>> credential_source::usable() const {
    std::lock_guard lock(mutex_);
    if (!current_) {
        return unavailable("the gateway has no AWS credentials: " +
                           (last_error_.empty() ? std::string("none found") : last_error_));
    }
    if (current_->expiration && now_() >= *current_->expiration) {
        return unavailable("the gateway's AWS credentials (" + current_->source + ") expired at " +
                           iso(*current_->expiration) +
                           " and refreshing them fails: " + last_error_);
    }
    return current_;
}

void credential_source::tick() {
    {
        std::lock_guard lock(mutex_);
        if (!next_ || now_() < *next_) return;
    }
    // Resolve without the lock: requests keep signing with the current credentials meanwhile.
    auto got = resolve_();
    std::lock_guard lock(mutex_);
    const auto now = now_();
    if (got) {
        current_ = std::make_shared<const aws::timed_credentials>(std::move(*got));
        failures_ = 0;
        last_error_.clear();
        std::uniform_real_distribution<double> jitter(0.0, 1.0);
        next_ = current_->expiration
                    ? std::optional(refresh_time(now, *current_->expiration, jitter(rng_)))
                    : std::nullopt;
        log_credentials(*current_, "credentials_loaded");
        return;
    }
    ++failures_;
    last_error_ = got.error().message;
    // Retry with backoff (1, 2, 4 ... 60 s); never log more than the reason, which names no secret.
    const auto backoff = std::chrono::seconds(1 << std::min(failures_ - 1, 6));
    next_ = now + std::min<std::chrono::seconds>(backoff, 60s);
    obs::event("credentials_refresh_failed")
        .num("attempt", failures_)
        .num("retry_in_s", std::min<std::chrono::seconds>(backoff, 60s).count())
        .str("error", last_error_)
        .warn();
}

std::optional<sys_seconds> credential_source::next_attempt() const {
    std::lock_guard lock(mutex_);
    return next_;
}

std::string credential_source::last_error() const {
    std::lock_guard lock(mutex_);
    return last_error_;
}

void credential_source::run_in_background() {
    thread_ = std::thread([this] {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            // Wake at the next attempt, and at least every minute (the wall clock may jump).
            auto wait = std::chrono::seconds(60);
            if (next_) wait = std::clamp(*next_ - now_(), std::chrono::seconds(0), wait);
            if (wait.count() > 0) wake_.wait_for(lock, wait, [this] { return stopping_; });
            if (stopping_) break;
            lock.unlock();
            tick();
            lock.lock();
        }
    });
}

namespace {

/// One bounded exchange on a private io_context, so providers can stay synchronous.
awaitable<void> exchange(asio::ssl::context& tls,
                         config::region_endpoint ep,
                         std::string target,
                         const aws::fetch_request& in,
                         std::chrono::milliseconds connect_timeout,
                         result<aws::fetch_response>& out) {
    auto ex = co_await asio::this_coro::executor;
    auto [cec, conn] = co_await connect_upstream(ex, tls, ep, connect_timeout);
    if (cec) {
        out = unavailable("cannot reach " + ep.host + ": " + cec.message());
        co_return;
    }
    http::request<http::string_body> req{http::string_to_verb(in.method), target, 11};
    req.set(http::field::host, ep.host_header);
    for (const auto& h : in.headers) req.set(h.name, h.value);
    req.body() = in.body;
    req.keep_alive(false);
    req.prepare_payload();
    http::response_parser<http::string_body> p;
    p.body_limit(1024 * 1024);
    conn->tcp().expires_after(10s);
    const auto ec = co_await exchange_once(*conn, req, p);
    if (ec) {
        out = unavailable("no answer from " + ep.host + ": " + ec.message());
        co_return;
    }
    out = aws::fetch_response{p.get().result_int(), std::move(p.get().body())};
}

result<aws::fetch_response> fetch(asio::ssl::context& tls, const aws::fetch_request& in) {
    auto url = boost::urls::parse_uri(in.url);
    if (!url || (url->scheme() != "http" && url->scheme() != "https") || !url->has_authority())
        return unavailable("not an http(s) URL");
    config::region_endpoint ep;
    ep.tls = url->scheme() == "https";
    ep.host = std::string(url->host_address());
    ep.port = url->has_port() ? url->port_number() : (ep.tls ? 443 : 80);
    ep.host_header = std::string(url->encoded_host_and_port());
    std::string target = url->encoded_path().empty() ? "/" : std::string(url->encoded_path());
    if (url->has_query()) target += "?" + std::string(url->encoded_query());
    // Metadata endpoints answer at once or not at all (not on EC2/ECS): do not wait long.
    const bool link_local = ep.host.starts_with("169.254.") || ep.host.starts_with("fd00:ec2");
    const auto connect_timeout = link_local ? std::chrono::milliseconds(1000) : 3000ms;
    result<aws::fetch_response> out = unavailable("no answer from " + ep.host + " in time");
    asio::io_context ioc;
    asio::co_spawn(ioc, exchange(tls, ep, target, in, connect_timeout, out), asio::detached);
    ioc.run_for(15s);
    return out;
}

result<std::string> run_process(const std::string& command) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return unavailable("credential_process: no pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    const char* argv[] = {"/bin/sh", "-c", command.c_str(), nullptr};
    pid_t pid = 0;
    int rc =
        posix_spawn(&pid, "/bin/sh", &actions, nullptr, const_cast<char* const*>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
        ::close(fds[0]);
        return unavailable("credential_process could not be started");
    }
    std::string out;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    bool too_slow = false, too_big = false;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            too_slow = true;
            break;
        }
        pollfd pfd{fds[0], POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
        char buf[4096];
        auto n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
        if (out.size() > 64 * 1024) {
            too_big = true;
            break;
        }
    }
    ::close(fds[0]);
    if (too_slow || too_big) ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (too_slow) return unavailable("credential_process took longer than 60 s");
    if (too_big) return unavailable("credential_process wrote more than 64 KiB");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return unavailable("credential_process exited with status " +
                           std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1));
    }
    return out;
}

}  // namespace

aws::provider_io system_provider_io(const std::string& ca_file) {
    auto tls = std::make_shared<asio::ssl::context>(make_tls_context(ca_file));
    aws::provider_io io;
    io.env = [](std::string_view name) -> std::optional<std::string> {
        const char* v = std::getenv(std::string(name).c_str());
        if (!v) return std::nullopt;
        return std::string(v);
    };
    io.read_file = [](const std::string& path) -> std::optional<std::string> {
        std::ifstream in(path, std::ios::binary);
        if (!in) return std::nullopt;
        std::ostringstream s;
        s << in.rdbuf();
        return s.str();
    };
    io.fetch = [tls](const aws::fetch_request& r) { return fetch(*tls, r); };
    io.run = run_process;
    io.now = [] {
        return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
    };
    return io;
}

credential_source::resolver make_resolver(aws::provider_io io,
                                          std::string region,
                                          const config::credentials_config& cfg) {
    return
        [io = std::move(io), region = std::move(region), source = cfg.source,
         profile = cfg.profile] { return aws::resolve_credentials(io, region, source, profile); };
}

}  // namespace bgw::net
