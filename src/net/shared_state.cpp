// Fleet mode's connections to Redis: one per event loop, the heartbeat, the episodes the log
// and the metrics tell of. What the scripts decide is fleet/shared_limits.cpp's.

#include "bgw/net/shared_state.hpp"

#include "bgw/fleet/redis_url.hpp"
#include "bgw/obs/log.hpp"

#include <fstream>
#include <random>
#include <sstream>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <unistd.h>

namespace bgw::net {
namespace {

using std::chrono::milliseconds;

/// How often a gateway tells the fleet it is alive, and how long it counts without news.
constexpr milliseconds heartbeat_period{2000};
constexpr milliseconds heartbeat_horizon{10'000};

result<std::string> read_password(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return validation_error("shared_state.redis.password_file: cannot read " + path);
    }
    std::ostringstream text;
    text << in.rdbuf();
    std::string password = text.str();
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r'))
        password.pop_back();
    if (password.empty())
        return validation_error("shared_state.redis.password_file: " + path + " is empty");
    if (password.size() > 4096)
        return validation_error("shared_state.redis.password_file: " + path +
                                " holds more than 4096 bytes; a password is expected");
    return password;
}

result<std::shared_ptr<asio::ssl::context>> redis_tls(const config::shared_state_config& cfg) {
    auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                     asio::ssl::context::no_tlsv1_1);
    ctx->set_verify_mode(asio::ssl::verify_peer);
    beast::error_code ec;
    if (cfg.ca_file.empty()) {
        ctx->set_default_verify_paths(ec);
    } else {
        ctx->load_verify_file(cfg.ca_file, ec);
    }
    if (ec) {
        return validation_error(
            "shared_state.redis.ca_file: cannot load " +
            (cfg.ca_file.empty() ? std::string("the system's CAs") : cfg.ca_file) + " (" +
            ec.message() + ")");
    }
    return ctx;
}

std::string member_name() {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
    std::random_device rd;
    std::ostringstream out;
    out << host << ':' << getpid() << ':' << std::hex << rd();
    return out.str();
}

}  // namespace

/// What one link reports, told to the shared state with the link's index.
class shared_state::link_watch final : public redis_events {
public:
    link_watch(shared_state& s, std::size_t i) : s_(s), i_(i) {}
    void link_up() override { s_.came_up(i_); }
    void link_down(std::string_view reason) override { s_.went_down(i_, reason); }
    void link_error(std::string_view kind) override {
        if (kind == "timeout") {
            ++s_.timeouts_;
        } else if (kind == "reply") {
            ++s_.reply_errors_;
        } else {
            ++s_.connection_errors_;
        }
    }

private:
    shared_state& s_;
    std::size_t i_;
};

result<std::unique_ptr<shared_state>> shared_state::make(const config::shared_state_config& cfg) {
    auto url = fleet::parse_redis_url(cfg.url);
    if (!url) return validation_error("shared_state.redis.url: " + url.error().message);
    redis_settings settings;
    settings.url = *url;
    settings.url.tls = cfg.tls;
    settings.timeout = cfg.timeout;
    if (!cfg.password_file.empty()) {
        auto p = read_password(cfg.password_file);
        if (!p) return p.error();
        settings.password = std::move(*p);
    }
    if (cfg.tls) {
        auto t = redis_tls(cfg);
        if (!t) return t.error();
        settings.tls = std::move(*t);
    }
    return std::unique_ptr<shared_state>(new shared_state(cfg, std::move(settings)));
}

shared_state::shared_state(config::shared_state_config cfg, redis_settings settings)
    : cfg_(std::move(cfg)), settings_(std::move(settings)), member_(member_name()) {
    fleet_size_ = cfg_.fleet_size ? cfg_.fleet_size : 1;
}

shared_state::~shared_state() = default;

void shared_state::attach(asio::io_context& ioc) {
    slot s;
    s.ioc = &ioc;
    s.watch = std::make_unique<link_watch>(*this, links_.size());
    s.link = std::make_unique<redis_link>(ioc, settings_, *s.watch);
    links_.push_back(std::move(s));
    std::lock_guard lock(episode_mutex_);
    link_down_.push_back(true);  // not up until it has connected
    ++links_down_;
}

void shared_state::start(std::function<void(unsigned)> on_size) {
    episode_start_ = std::chrono::steady_clock::now();
    for (auto& s : links_) asio::post(*s.ioc, [link = s.link.get()] { link->start(); });
    if (!links_.empty())
        asio::co_spawn(*links_.front().ioc, heartbeat(std::move(on_size)), asio::detached);
}

awaitable<void> shared_state::stop() {
    stopping_ = true;
    auto remaining = std::make_shared<std::atomic<std::size_t>>(links_.size());
    for (auto& s : links_) {
        asio::post(*s.ioc, [link = s.link.get(), remaining] {
            link->stop();
            --*remaining;
        });
    }
    asio::steady_timer timer(co_await asio::this_coro::executor);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (remaining->load() > 0 && std::chrono::steady_clock::now() < deadline) {
        timer.expires_after(milliseconds(10));
        co_await timer.async_wait(use_nothrow);
    }
}

redis_link* shared_state::link_for(const asio::any_io_executor& ex) const {
    const auto* ctx = &asio::query(ex, asio::execution::context);
    for (const auto& s : links_) {
        if (static_cast<const asio::execution_context*>(s.ioc) == ctx) return s.link.get();
    }
    return nullptr;
}

redis_link* shared_state::link_of_this_thread() const {
    for (const auto& s : links_) {
        if (s.ioc->get_executor().running_in_this_thread()) return s.link.get();
    }
    return nullptr;
}

awaitable<std::optional<fleet::admission_verdict>> shared_state::admit(
    const asio::any_io_executor& ex, const fleet::admission_ask& ask) {
    redis_link* link = link_for(ex);
    if (!link || !link->up()) {
        ++fallbacks_;
        co_return std::nullopt;
    }
    auto call = fleet::admission_call(ask);
    auto r = co_await link->eval(fleet::admission_script(), call.keys, call.args);
    std::optional<fleet::admission_verdict> v;
    if (r) {
        v = fleet::read_admission(*r);
        // An error reply the link has counted already; any other shape is counted here.
        if (!v && !r->is_error()) ++reply_errors_;
    }
    if (!v) ++fallbacks_;
    co_return v;
}

awaitable<std::optional<milliseconds>> shared_state::publish_rest(const asio::any_io_executor& ex,
                                                                  const std::string& region,
                                                                  const std::string& model,
                                                                  milliseconds rest) {
    redis_link* link = link_for(ex);
    if (!link || !link->up()) co_return std::nullopt;
    auto call = fleet::cooldown_call(fleet::cooldown_key(cfg_.key_prefix, region, model), rest);
    auto r = co_await link->eval(fleet::cooldown_script(), call.keys, call.args);
    if (!r) co_return std::nullopt;
    auto in_force = fleet::read_cooldown(*r);
    if (!in_force && !r->is_error()) ++reply_errors_;
    co_return in_force;
}

void shared_state::publish_rest_detached(const asio::any_io_executor& ex,
                                         const std::string& region,
                                         const std::string& model,
                                         milliseconds rest) {
    redis_link* link = link_for(ex);
    if (!link || !link->up()) return;
    auto call = fleet::cooldown_call(fleet::cooldown_key(cfg_.key_prefix, region, model), rest);
    link->eval_detached(fleet::cooldown_script(), std::move(call.keys), std::move(call.args));
}

void shared_state::correct(const std::string& key,
                           std::uint64_t tpm,
                           std::uint64_t estimated,
                           std::uint64_t actual) {
    redis_link* link = link_of_this_thread();
    // A correction lost with the connection is a budget off by one request's estimate, for
    // at most a minute: not worth a wait on anybody's path.
    if (!link || !link->up()) return;
    auto call = fleet::correction_call(key, tpm, estimated, actual);
    link->eval_detached(fleet::correction_script(), std::move(call.keys), std::move(call.args));
}

awaitable<void> shared_state::heartbeat(std::function<void(unsigned)> on_size) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    redis_link& link = *links_.front().link;
    const auto key = fleet::fleet_key(cfg_.key_prefix);
    while (!stopping_) {
        if (link.up()) {
            auto call = fleet::heartbeat_call(key, member_, heartbeat_horizon);
            auto r = co_await link.eval(fleet::heartbeat_script(), call.keys, call.args);
            if (auto n = r ? fleet::read_heartbeat(*r) : std::nullopt;
                n && !cfg_.fleet_size && *n != fleet_size_.load()) {
                fleet_size_ = *n;
                obs::event("fleet_size").unum("gateways", *n).info();
                if (on_size) on_size(*n);
            }
        }
        // Soon after start (the first connection), then at the period.
        timer.expires_after(link.up() || stopping_ ? heartbeat_period : milliseconds(200));
        co_await timer.async_wait(use_nothrow);
    }
    if (link.up()) link.send({"ZREM", key, member_});
}

void shared_state::went_down(std::size_t i, std::string_view reason) {
    std::lock_guard lock(episode_mutex_);
    if (!link_down_[i]) {
        link_down_[i] = true;
        ++links_down_;
    }
    if (episode_logged_ || stopping_) return;
    episode_logged_ = true;
    episode_start_ = std::chrono::steady_clock::now();
    obs::event("shared_state_down")
        .str("reason", std::string(reason))
        .str("fallback",
             "local limits, the fleet budget divided by " + std::to_string(fleet_size_.load()))
        .warn();
}

void shared_state::came_up(std::size_t i) {
    std::lock_guard lock(episode_mutex_);
    if (link_down_[i]) {
        link_down_[i] = false;
        --links_down_;
    }
    if (links_down_ > 0) return;
    const auto down =
        std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - episode_start_);
    if (episode_logged_) {
        episode_logged_ = false;
        obs::event("shared_state_up")
            .num("down_ms", down.count())
            .unum("fallback_decisions", fallbacks_.load() - fallbacks_at_start_)
            .info();
    } else if (!connected_once_) {
        obs::event("shared_state_connected")
            .unum("connections", links_.size())
            .num("connect_ms", down.count())
            .info();
    }
    connected_once_ = true;
    // The next episode's count starts now: the calls that time out before a connection is
    // declared lost are its decisions too.
    fallbacks_at_start_ = fallbacks_.load();
}

obs::shared_state_gauges shared_state::gauges() const {
    obs::shared_state_gauges g;
    g.up = !links_.empty();
    for (const auto& s : links_) g.up = g.up && s.link->up();
    g.fleet_size = fleet_size_.load();
    g.timeouts = timeouts_.load();
    g.connection_errors = connection_errors_.load();
    g.reply_errors = reply_errors_.load();
    g.fallbacks = fallbacks_.load();
    return g;
}

}  // namespace bgw::net
