#include "bgw/obs/metrics.hpp"

#include "bgw/obs/log.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <utility>

namespace bgw::obs {
namespace {

/// A label value as the text format wants it: UTF-8 (a scraper refuses the whole exposition
/// otherwise), with backslash, double quote and newline escaped.
void append_label_value(std::string& out, std::string_view raw) {
    for (char c : valid_utf8(raw)) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c == '"') {
            out += "\\\"";
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
}

void append_labels(std::string& out,
                   std::initializer_list<std::string_view> names,
                   const std::vector<std::string>& values,
                   std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
    if (names.size() == 0 && extra_name.empty()) return;
    out += '{';
    std::size_t i = 0;
    for (auto name : names) {
        if (i) out += ',';
        out += name;
        out += "=\"";
        append_label_value(out, values[i]);
        out += '"';
        ++i;
    }
    if (!extra_name.empty()) {
        if (i) out += ',';
        out += extra_name;
        out += "=\"";
        append_label_value(out, extra_value);
        out += '"';
    }
    out += '}';
}

/// A sample value in the fewest digits that read back as the same double ("0.001", not
/// "0.0010000000000000000208"); integers without a fraction.
std::string number(double v) {
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    if (std::isnan(v)) return "NaN";
    char buf[40];
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
        std::snprintf(buf, sizeof buf, "%.0f", v);
        return buf;
    }
    for (int digits = 1; digits <= 17; ++digits) {
        std::snprintf(buf, sizeof buf, "%.*g", digits, v);
        if (std::strtod(buf, nullptr) == v) break;
    }
    return buf;
}

void head(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

template <class Map>
void samples(std::string& out,
             std::string_view name,
             std::initializer_list<std::string_view> label_names,
             const Map& m) {
    for (const auto& [labels, value] : m) {
        out += name;
        append_labels(out, label_names, labels);
        out += ' ';
        out += number(static_cast<double>(value));
        out += '\n';
    }
}

/// A histogram's series (labelled by region and operation): cumulative buckets up to +Inf,
/// then _sum and _count.
template <class Map>
void histogram_samples(std::string& out,
                       std::string_view name,
                       std::string_view help,
                       const Map& m) {
    head(out, name, "histogram", help);
    const std::string bucket = std::string(name) + "_bucket";
    for (const auto& [values, h] : m) {
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i < metrics::latency_buckets.size(); ++i) {
            cumulative += h.buckets[i];
            out += bucket;
            append_labels(out, {"region", "operation"}, values, "le",
                          number(metrics::latency_buckets[i]));
            out += ' ' + std::to_string(cumulative) + '\n';
        }
        out += bucket;
        append_labels(out, {"region", "operation"}, values, "le", "+Inf");
        out += ' ' + std::to_string(h.count) + '\n';
        out += name;
        out += "_sum";
        append_labels(out, {"region", "operation"}, values);
        out += ' ' + number(h.sum) + '\n';
        out += name;
        out += "_count";
        append_labels(out, {"region", "operation"}, values);
        out += ' ' + std::to_string(h.count) + '\n';
    }
}

/// A metric without labels: its head and its one sample.
void unlabelled(std::string& out,
                std::string_view name,
                std::string_view type,
                std::string_view help,
                const std::string& value) {
    head(out, name, type, help);
    out += name;
    out += ' ' + value + '\n';
}

/// The values read at scrape time (`gauges`), in the order the exposition has always had.
void render_gauges(std::string& out, const gauges& g) {
    unlabelled(out, "bedrock_gateway_inflight_requests", "gauge", "Requests being answered now.",
               std::to_string(g.inflight_requests));
    unlabelled(out, "bedrock_gateway_open_connections", "gauge", "Client connections open now.",
               std::to_string(g.open_connections));
    unlabelled(out, "bedrock_gateway_open_streams", "gauge", "Event streams being relayed now.",
               std::to_string(g.open_streams));
    unlabelled(out, "bedrock_gateway_inflight_body_bytes", "gauge",
               "Request body bytes held in memory now (limits.max_inflight_body_bytes).",
               std::to_string(g.inflight_body_bytes));

    head(out, "bedrock_gateway_credentials_expiry_seconds", "gauge",
         "Seconds until the signing credentials expire (absent for keys that do not).");
    if (g.credentials_expiry_seconds)
        out += "bedrock_gateway_credentials_expiry_seconds " +
               number(*g.credentials_expiry_seconds) + '\n';

    if (const auto& s = g.shared_state) {
        unlabelled(out, "bedrock_gateway_shared_state_up", "gauge",
                   "1 when every connection to the fleet's Redis answers, else 0 (limits are "
                   "then enforced locally).",
                   s->up ? "1" : "0");
        unlabelled(out, "bedrock_gateway_shared_state_fleet_size", "gauge",
                   "Gateways sharing the limits (shared_state.redis.fleet_size, or as seen).",
                   std::to_string(s->fleet_size));
        head(out, "bedrock_gateway_shared_state_errors_total", "counter",
             "Calls to the shared state that failed, by kind.");
        for (auto [kind, n] :
             {std::pair<std::string_view, std::uint64_t>{"connection", s->connection_errors},
              {"reply", s->reply_errors},
              {"timeout", s->timeouts}}) {
            out += "bedrock_gateway_shared_state_errors_total";
            append_labels(out, {"kind"}, {std::string(kind)});
            out += ' ' + std::to_string(n) + '\n';
        }
        unlabelled(out, "bedrock_gateway_shared_state_fallback_total", "counter",
                   "Admissions decided with local limits because the shared state did not answer.",
                   std::to_string(s->fallbacks));
    }

    if (!g.batch_records.empty()) {
        head(out, "bedrock_gateway_batch_records", "gauge", "Batch-tier records by state.");
        for (const auto& [state, n] : g.batch_records) {
            out += "bedrock_gateway_batch_records";
            append_labels(out, {"state"}, {state});
            out += ' ' + std::to_string(n) + '\n';
        }
    }
}

}  // namespace

void metrics::histogram::observe(double v) {
    ++count;
    sum += v;
    for (std::size_t i = 0; i < latency_buckets.size(); ++i) {
        if (v <= latency_buckets[i]) {
            ++buckets[i];
            return;
        }
    }
}

metrics::metrics(std::set<std::string, std::less<>> known_models, std::size_t max_models)
    : models_(std::move(known_models)), max_models_(models_.size() + max_models) {}

void metrics::know_models(const std::set<std::string, std::less<>>& models) {
    std::lock_guard lock(mutex_);
    for (const auto& m : models) {
        if (models_.insert(m).second) ++max_models_;
    }
}

std::string metrics::model_label_locked(std::string_view model) {
    if (model.empty()) return {};
    if (models_.find(model) != models_.end()) return std::string(model);
    if (models_.size() >= max_models_) return "other";
    models_.emplace(model);
    return std::string(model);
}

std::string metrics::model_label(std::string_view model) {
    std::lock_guard lock(mutex_);
    return model_label_locked(model);
}

void metrics::request(std::string_view operation,
                      std::string_view region,
                      std::string_view tier,
                      std::string_view model,
                      unsigned status) {
    std::lock_guard lock(mutex_);
    ++requests_[{std::string(operation), std::string(region), std::string(tier),
                 model_label_locked(model), std::to_string(status)}];
}

void metrics::upstream_latency(std::string_view region,
                               std::string_view operation,
                               double seconds) {
    std::lock_guard lock(mutex_);
    upstream_latency_[{std::string(region), std::string(operation)}].observe(seconds);
}

void metrics::first_event(std::string_view region, std::string_view operation, double seconds) {
    std::lock_guard lock(mutex_);
    first_event_[{std::string(region), std::string(operation)}].observe(seconds);
}

void metrics::throttle(std::string_view region, std::string_view model, std::string_view source) {
    std::lock_guard lock(mutex_);
    ++throttles_[{std::string(region), model_label_locked(model), std::string(source)}];
}

void metrics::retry() {
    std::lock_guard lock(mutex_);
    ++retries_;
}

void metrics::failover() {
    std::lock_guard lock(mutex_);
    ++failovers_;
}

void metrics::session_failed() {
    std::lock_guard lock(mutex_);
    ++session_failures_;
}

void metrics::accept_failed() {
    std::lock_guard lock(mutex_);
    ++accept_errors_;
}

void metrics::tokens(std::string_view region,
                     std::string_view tier,
                     std::string_view model,
                     std::uint64_t input,
                     std::uint64_t output) {
    std::lock_guard lock(mutex_);
    auto label = model_label_locked(model);
    tokens_[{"input", std::string(region), std::string(tier), label}] += input;
    tokens_[{"output", std::string(region), std::string(tier), label}] += output;
}

void metrics::cost(std::string_view region,
                   std::string_view tier,
                   std::string_view model,
                   double usd) {
    std::lock_guard lock(mutex_);
    cost_[{std::string(region), std::string(tier), model_label_locked(model)}] += usd;
}

void metrics::batch_savings(std::string_view region, std::string_view model, double usd) {
    std::lock_guard lock(mutex_);
    savings_[{std::string(region), model_label_locked(model)}] += usd;
}

void metrics::reload(std::string_view result) {
    std::lock_guard lock(mutex_);
    ++reloads_[{std::string(result)}];
}

std::string metrics::render(const gauges& g) const {
    std::lock_guard lock(mutex_);
    std::string out;
    out.reserve(4096);

    head(out, "bedrock_gateway_requests_total", "counter",
         "Requests answered, by operation, region, tier, model and HTTP status.");
    samples(out, "bedrock_gateway_requests_total",
            {"operation", "region", "tier", "model", "status"}, requests_);
    histogram_samples(out, "bedrock_gateway_upstream_latency_seconds",
                      "Time from sending a request upstream to its response head, per attempt.",
                      upstream_latency_);
    histogram_samples(
        out, "bedrock_gateway_time_to_first_event_seconds",
        "Time from a streaming request's arrival to its first event sent to the client.",
        first_event_);

    head(out, "bedrock_gateway_throttles_total", "counter",
         "Throttles: from Bedrock (upstream), or the gateway's cool-downs and limits (local).");
    samples(out, "bedrock_gateway_throttles_total", {"region", "model", "source"}, throttles_);

    unlabelled(out, "bedrock_gateway_retries_total", "counter",
               "Attempts repeated on the same target after a backoff.", std::to_string(retries_));
    unlabelled(out, "bedrock_gateway_failovers_total", "counter",
               "Moves to the route's next target after a throttle or a failure.",
               std::to_string(failovers_));
    unlabelled(out, "bedrock_gateway_session_failures_total", "counter",
               "Requests ended by an unexpected exception (logged as session_failed); the "
               "connection was closed.",
               std::to_string(session_failures_));
    unlabelled(out, "bedrock_gateway_accept_errors_total", "counter",
               "Failed accepts of client connections (EMFILE and the like); each backs off.",
               std::to_string(accept_errors_));

    head(out, "bedrock_gateway_tokens_total", "counter",
         "Tokens the answers say they used, by direction (input|output).");
    samples(out, "bedrock_gateway_tokens_total", {"direction", "region", "tier", "model"}, tokens_);

    head(out, "bedrock_gateway_estimated_cost_usd_total", "counter",
         "Estimated spend from the config's price table (batch at 0.5; provisioned by the hour).");
    std::map<label_values, double> cost = cost_;
    for (const auto& [key, usd] : g.provisioned_cost_usd)
        cost[{key.first, "provisioned", key.second}] += usd;
    samples(out, "bedrock_gateway_estimated_cost_usd_total", {"region", "tier", "model"}, cost);

    head(out, "bedrock_gateway_batch_savings_usd_total", "counter",
         "Estimated saving of batch-tier records against the same tokens on demand.");
    samples(out, "bedrock_gateway_batch_savings_usd_total", {"region", "model"}, savings_);

    render_gauges(out, g);

    head(out, "bedrock_gateway_config_reloads_total", "counter",
         "SIGHUP reloads, by result (ok|error).");
    samples(out, "bedrock_gateway_config_reloads_total", {"result"}, reloads_);
    return out;
}

}  // namespace bgw::obs
