#include "bgw/config/config.hpp"
#include "bgw/fleet/redis_url.hpp"
#include "bgw/util/json.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include <arpa/inet.h>
#include <boost/url/parse.hpp>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

namespace bgw::config {
namespace {

using json = rapidjson::Value;

error bad(std::string path, std::string why) {
    return validation_error(std::move(path) + ": " + std::move(why));
}

/// Rejects any member of `obj` not in `known`, naming it with its JSON path.
result<void> only_known(const json& obj,
                        std::string_view path,
                        std::initializer_list<std::string_view> known) {
    for (auto it = obj.MemberBegin(); it != obj.MemberEnd(); ++it) {
        std::string_view name(it->name.GetString(), it->name.GetStringLength());
        for (auto prev = obj.MemberBegin(); prev != it; ++prev) {
            if (name == std::string_view(prev->name.GetString(), prev->name.GetStringLength())) {
                return bad(
                    path.empty() ? std::string(name) : std::string(path) + "." + std::string(name),
                    "key appears twice");
            }
        }
        if (std::find(known.begin(), known.end(), name) == known.end()) {
            std::string where =
                path.empty() ? std::string(name) : std::string(path) + "." + std::string(name);
            std::string list;
            for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
            return bad(where, "unknown key (known here: " + list + ")");
        }
    }
    return {};
}

result<std::string> get_string(const json& v, const std::string& path) {
    if (!v.IsString()) return bad(path, "must be a string");
    return std::string(v.GetString(), v.GetStringLength());
}

result<std::int64_t> get_int(const json& v,
                             const std::string& path,
                             std::int64_t lo,
                             std::int64_t hi) {
    if (!v.IsInt64() || v.GetInt64() < lo || v.GetInt64() > hi) {
        return bad(path, "must be an integer between " + std::to_string(lo) + " and " +
                             std::to_string(hi));
    }
    return v.GetInt64();
}

result<double> get_price(const json& v, const std::string& path) {
    if (!v.IsNumber() || v.GetDouble() < 0 || v.GetDouble() > 1e6)
        return bad(path, "must be a number of USD from 0 to 1000000");
    return v.GetDouble();
}

/// One `prices` entry: per-1k token prices, or a provisioned model unit's hourly price.
result<price> parse_price(const json& entry, const std::string& path) {
    if (!entry.IsObject()) return bad(path, "must be an object");
    if (auto r = only_known(entry, path,
                            {"input_per_1k", "output_per_1k", "model_unit_hour", "model_units"});
        !r)
        return r.error();
    price p;
    for (auto [key, field] :
         {std::pair{"input_per_1k", &p.input_per_1k}, std::pair{"output_per_1k", &p.output_per_1k},
          std::pair{"model_unit_hour", &p.model_unit_hour}}) {
        if (auto m = entry.FindMember(key); m != entry.MemberEnd()) {
            auto d = get_price(m->value, path + "." + key);
            if (!d) return d.error();
            *field = *d;
        }
    }
    if (auto m = entry.FindMember("model_units"); m != entry.MemberEnd()) {
        auto n = get_int(m->value, path + ".model_units", 1, 100000);
        if (!n) return n.error();
        p.model_units = static_cast<unsigned>(*n);
    }
    if ((p.model_unit_hour > 0) != (p.model_units > 0))
        return bad(path, "a provisioned price needs both model_unit_hour and model_units");
    return p;
}

result<void> parse_prices(const json& v, config& out) {
    if (!v.IsObject()) {
        return bad("prices",
                   "must be an object of model id -> {input_per_1k, output_per_1k} or "
                   "{model_unit_hour, model_units}");
    }
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string model(it->name.GetString(), it->name.GetStringLength());
        std::string path = "prices." + model;
        if (model.empty() || model.size() > 2048)
            return bad("prices", "a model id must be 1 to 2048 characters");
        if (out.prices.contains(model)) return bad(path, "key appears twice");
        auto p = parse_price(it->value, path);
        if (!p) return p.error();
        out.prices.emplace(std::move(model), *p);
    }
    return {};
}

result<std::vector<std::string>> get_string_list(const json& v,
                                                 const std::string& path,
                                                 std::size_t max_len) {
    if (!v.IsArray()) return bad(path, "must be an array of strings");
    std::vector<std::string> out;
    for (const auto& item : v.GetArray()) {
        if (!item.IsString() || item.GetStringLength() == 0 || item.GetStringLength() > max_len)
            return bad(path, "each entry must be a string of 1 to " + std::to_string(max_len) +
                                 " characters");
        out.emplace_back(item.GetString(), item.GetStringLength());
    }
    return out;
}

/// A caller key's `sha256`: 64 hex digits.
result<std::array<unsigned char, 32>> parse_key_hash(const json& entry, const std::string& path) {
    auto hash = entry.FindMember("sha256");
    if (hash == entry.MemberEnd()) {
        return bad(path + ".sha256",
                   "is required: the key's SHA-256 in hex (printf %s KEY | sha256sum)");
    }
    std::string_view hex = hash->value.IsString() ? std::string_view(hash->value.GetString(),
                                                                     hash->value.GetStringLength())
                                                  : std::string_view{};
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    std::array<unsigned char, 32> out{};
    bool ok = hex.size() == 64;
    for (std::size_t i = 0; ok && i < 32; ++i) {
        int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
        ok = hi >= 0 && lo >= 0;
        if (ok) out[i] = static_cast<unsigned char>(hi * 16 + lo);
    }
    if (!ok) return bad(path + ".sha256", "must be 64 hex digits (a SHA-256, not the key)");
    return out;
}

/// A caller key's scope and limits: `models`, `regions` (allowed ones only), `rpm`, `tpm`.
result<void> parse_key_scope(const json& entry,
                             const std::string& path,
                             const config& out,
                             caller_key& key) {
    if (auto m = entry.FindMember("models"); m != entry.MemberEnd()) {
        auto list = get_string_list(m->value, path + ".models", 2048);
        if (!list) return list.error();
        key.models = std::move(*list);
    }
    if (auto m = entry.FindMember("regions"); m != entry.MemberEnd()) {
        auto list = get_string_list(m->value, path + ".regions", 64);
        if (!list) return list.error();
        for (const auto& r : *list) {
            if (!out.regions.contains(r))
                return bad(path + ".regions", "\"" + r + "\" is not in regions");
        }
        key.regions = std::move(*list);
    }
    for (auto [field, target] :
         {std::pair{"rpm", &key.limit.rpm}, std::pair{"tpm", &key.limit.tpm}}) {
        if (auto m = entry.FindMember(field); m != entry.MemberEnd()) {
            auto n = get_int(m->value, path + "." + field, 0, 1'000'000'000);
            if (!n) return n.error();
            *target = static_cast<std::uint64_t>(*n);
        }
    }
    return {};
}

/// One `caller_keys` entry, against the keys before it (no two share a hash).
result<caller_key> parse_caller_key(const json& entry, const std::string& path, const config& out) {
    if (!entry.IsObject()) return bad(path, "must be an object");
    if (auto r = only_known(entry, path, {"sha256", "models", "regions", "rpm", "tpm"}); !r)
        return r.error();
    caller_key key;
    auto hash = parse_key_hash(entry, path);
    if (!hash) return hash.error();
    key.sha256 = *hash;
    for (const auto& other : out.caller_keys) {
        if (other.second.sha256 == key.sha256)
            return bad(path + ".sha256", "is the same key as caller_keys." + other.first);
    }
    if (auto r = parse_key_scope(entry, path, out, key); !r) return r.error();
    return key;
}

/// Parses after `regions`: a caller key's regions must be allowed ones.
result<void> parse_caller_keys(const json& v, config& out) {
    if (!v.IsObject()) {
        return bad("caller_keys",
                   "must be an object of name -> {sha256, models?, regions?, rpm?, tpm?}");
    }
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string name(it->name.GetString(), it->name.GetStringLength());
        std::string path = "caller_keys." + name;
        if (name.empty() || name.size() > 128 || name == "*")
            return bad("caller_keys", "a key name must be 1 to 128 characters, not \"*\"");
        if (out.caller_keys.contains(name)) return bad(path, "key appears twice");
        auto key = parse_caller_key(it->value, path, out);
        if (!key) return key.error();
        out.caller_keys.emplace(std::move(name), std::move(*key));
    }
    return {};
}

result<void> parse_regions(const json& v, config& out) {
    if (!v.IsObject()) return bad("regions", "must be an object of region name → settings");
    if (v.MemberCount() == 0) return bad("regions", "must allow at least one region");
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string name(it->name.GetString(), it->name.GetStringLength());
        std::string path = "regions." + name;
        if (!is_region_name(name)) return bad(path, "not a region name (like eu-west-1)");
        if (!it->value.IsObject()) return bad(path, "must be an object");
        if (auto r = only_known(it->value, path, {"endpoint", "control_endpoint", "s3_endpoint"});
            !r)
            return r.error();
        region_endpoint ep = standard_endpoint(name);
        region_endpoint control = standard_control_endpoint(name);
        region_endpoint s3 = standard_s3_endpoint(name);
        for (auto [key, target] :
             {std::pair{"endpoint", &ep}, std::pair{"control_endpoint", &control},
              std::pair{"s3_endpoint", &s3}}) {
            if (auto e = it->value.FindMember(key); e != it->value.MemberEnd()) {
                auto url = get_string(e->value, path + "." + key);
                if (!url) return url.error();
                auto parsed = parse_endpoint(*url);
                if (!parsed) return bad(path + "." + key, parsed.error().message);
                *target = *parsed;
            }
        }
        out.control_endpoints.emplace(name, control);
        out.s3_endpoints.emplace(name, s3);

        out.regions.emplace(std::move(name), std::move(ep));
    }
    return {};
}

result<void> parse_upstream(const json& v, config& out) {
    if (!v.IsObject()) return bad("upstream", "must be an object");
    if (auto r = only_known(
            v, "upstream",
            {"ca_file", "connect_timeout_ms", "response_timeout_ms", "stream_idle_timeout_ms",
             "max_idle_per_host", "pool_idle_timeout_ms", "max_response_header_bytes"});
        !r) {
        return r.error();
    }
    if (auto m = v.FindMember("ca_file"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "upstream.ca_file");
        if (!s) return s.error();
        out.upstream.ca_file = *s;
    }
    if (auto m = v.FindMember("connect_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.connect_timeout_ms", 1, 600'000);
        if (!n) return n.error();
        out.upstream.connect_timeout = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("response_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.response_timeout_ms", 1, 3'600'000);
        if (!n) return n.error();
        out.upstream.response_timeout = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("stream_idle_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.stream_idle_timeout_ms", 1, 3'600'000);
        if (!n) return n.error();
        out.upstream.stream_idle_timeout = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("max_response_header_bytes"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.max_response_header_bytes", 1024, 1024 * 1024);
        if (!n) return n.error();
        out.upstream.max_response_header_bytes = static_cast<std::size_t>(*n);
    }
    if (auto m = v.FindMember("max_idle_per_host"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.max_idle_per_host", 0, 10'000);
        if (!n) return n.error();
        out.upstream.max_idle_per_host = static_cast<std::size_t>(*n);
    }
    if (auto m = v.FindMember("pool_idle_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "upstream.pool_idle_timeout_ms", 1000, 3'600'000);
        if (!n) return n.error();
        out.upstream.pool_idle_timeout = std::chrono::milliseconds(*n);
    }
    return {};
}

result<void> parse_limits(const json& v, config& out) {
    if (!v.IsObject()) return bad("limits", "must be an object");
    if (auto r = only_known(
            v, "limits",
            {"max_body_bytes", "max_header_bytes", "max_header_count", "max_target_bytes",
             "header_timeout_ms", "client_idle_timeout_ms", "max_connections", "max_streams",
             "max_inflight_body_bytes", "h2_max_concurrent_streams"});
        !r) {
        return r.error();
    }
    limits_config& l = out.limits;
    auto ms = [](std::int64_t n) { return std::chrono::milliseconds(n); };
    // Bedrock itself refuses bodies over 25,000,000 bytes; allow a little headroom, no more.
    struct size_key {
        const char* name;
        std::int64_t lo, hi;
        std::size_t* field;
    };
    for (const auto& k :
         {size_key{"max_body_bytes", 1, 64'000'000, &l.max_body_bytes},
          size_key{"max_header_bytes", 1024, 1024 * 1024, &l.max_header_bytes},
          size_key{"max_header_count", 8, 10'000, &l.max_header_count},
          size_key{"max_target_bytes", 256, 64 * 1024, &l.max_target_bytes},
          size_key{"max_connections", 1, 1'000'000, &l.max_connections},
          size_key{"max_streams", 1, 1'000'000, &l.max_streams},
          size_key{"h2_max_concurrent_streams", 1, 10'000, &l.h2_max_concurrent_streams},
          size_key{"max_inflight_body_bytes", 1024, std::int64_t{1} << 40,
                   &l.max_inflight_body_bytes}}) {
        if (auto m = v.FindMember(k.name); m != v.MemberEnd()) {
            auto n = get_int(m->value, std::string("limits.") + k.name, k.lo, k.hi);
            if (!n) return n.error();
            *k.field = static_cast<std::size_t>(*n);
        }
    }
    if (auto m = v.FindMember("client_idle_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "limits.client_idle_timeout_ms", 1, 3'600'000);
        if (!n) return n.error();
        l.client_idle_timeout = ms(*n);
    }
    if (auto m = v.FindMember("header_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "limits.header_timeout_ms", 1, 600'000);
        if (!n) return n.error();
        l.header_timeout = ms(*n);
    }
    if (l.max_inflight_body_bytes < l.max_body_bytes) {
        return bad("limits.max_inflight_body_bytes",
                   "must be at least limits.max_body_bytes (" + std::to_string(l.max_body_bytes) +
                       "): a body of that size could never be read");
    }
    return {};
}

result<void> parse_retry(const json& v, config& out) {
    if (!v.IsObject()) return bad("retry", "must be an object");
    if (auto r = only_known(v, "retry",
                            {"max_attempts", "base_delay_ms", "max_delay_ms", "max_hold_ms",
                             "max_cooldown_ms", "default_timeout_ms"});
        !r)
        return r.error();
    if (auto m = v.FindMember("max_attempts"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.max_attempts", 1, 10);
        if (!n) return n.error();
        out.retry.max_attempts = static_cast<int>(*n);
    }
    if (auto m = v.FindMember("base_delay_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.base_delay_ms", 1, 60'000);
        if (!n) return n.error();
        out.retry.base_delay = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("max_delay_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.max_delay_ms", 1, 300'000);
        if (!n) return n.error();
        out.retry.max_delay = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("max_hold_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.max_hold_ms", 0, 300'000);
        if (!n) return n.error();
        out.retry.max_hold = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("max_cooldown_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.max_cooldown_ms", 1, 600'000);
        if (!n) return n.error();
        out.retry.max_cooldown = std::chrono::milliseconds(*n);
    }
    if (auto m = v.FindMember("default_timeout_ms"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "retry.default_timeout_ms", 0, 86'400'000);
        if (!n) return n.error();
        out.retry.default_timeout = std::chrono::milliseconds(*n);
    }
    if (out.retry.max_delay < out.retry.base_delay) {
        return bad("retry.max_delay_ms", "must not be below retry.base_delay_ms (" +
                                             std::to_string(out.retry.base_delay.count()) + ")");
    }
    if (out.retry.max_cooldown < out.retry.base_delay) {
        return bad("retry.max_cooldown_ms", "must not be below retry.base_delay_ms (" +
                                                std::to_string(out.retry.base_delay.count()) + ")");
    }
    return {};
}

result<void> parse_rate_limits(const json& v, config& out) {
    if (!v.IsObject()) return bad("rate_limits", "must be an object of model id -> {rpm, tpm}");
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string model(it->name.GetString(), it->name.GetStringLength());
        std::string path = "rate_limits." + model;
        if (model.empty() || model.size() > 2048)
            return bad("rate_limits", "a model id must be 1 to 2048 characters");
        if (out.rate_limits.contains(model)) return bad(path, "key appears twice");
        const json& limit = it->value;
        if (!limit.IsObject()) return bad(path, "must be an object with rpm and/or tpm");
        if (auto r = only_known(limit, path, {"rpm", "tpm"}); !r) return r.error();
        rate_limit rl;
        if (auto m = limit.FindMember("rpm"); m != limit.MemberEnd()) {
            auto n = get_int(m->value, path + ".rpm", 1, 1'000'000'000);
            if (!n) return n.error();
            rl.rpm = static_cast<std::uint64_t>(*n);
        }
        if (auto m = limit.FindMember("tpm"); m != limit.MemberEnd()) {
            auto n = get_int(m->value, path + ".tpm", 1, 1'000'000'000'000);
            if (!n) return n.error();
            rl.tpm = static_cast<std::uint64_t>(*n);
        }
        if (rl.rpm == 0 && rl.tpm == 0) return bad(path, "needs rpm, tpm or both");
        out.rate_limits.emplace(std::move(model), rl);
    }
    return {};
}

/// The region inside a provisioned-model ARN
/// (`arn:aws:bedrock:REGION:ACCOUNT:provisioned-model/ID`).
std::string_view arn_region(std::string_view arn) {
    for (int i = 0; i < 3; ++i) {
        auto colon = arn.find(':');
        if (colon == std::string_view::npos) return {};
        arn.remove_prefix(colon + 1);
    }
    return arn.substr(0, arn.find(':'));
}

result<route_target> parse_target(const json& v, const std::string& path, const config& out) {
    if (!v.IsObject()) return bad(path, "must be an object with region, tier and model_id");
    if (auto r = only_known(v, path, {"region", "tier", "model_id", "service_tier"}); !r)
        return r.error();
    route_target t;
    for (const char* key : {"region", "tier", "model_id"}) {
        if (!v.HasMember(key)) return bad(path + "." + key, "is required");
    }
    auto region = get_string(v["region"], path + ".region");
    if (!region) return region.error();
    if (!out.regions.contains(*region))
        return bad(path + ".region", "\"" + *region + "\" is not in regions (the allow-list)");
    t.region = *region;
    auto tier_text = get_string(v["tier"], path + ".tier");
    if (!tier_text) return tier_text.error();
    if (!parse_tier(*tier_text, t.tier))
        return bad(path + ".tier", "must be on-demand, provisioned or batch");
    auto model = get_string(v["model_id"], path + ".model_id");
    if (!model) return model.error();
    if (model->empty() || model->size() > 2048)
        return bad(path + ".model_id", "must be 1 to 2048 characters");
    t.model_id = *model;
    if (t.tier == tier::provisioned) {
        // The ARN is regional: sending it to another region can only fail.
        if (!t.model_id.starts_with("arn:") ||
            t.model_id.find(":provisioned-model/") == std::string::npos)
            return bad(path + ".model_id", "a provisioned target needs a provisioned-model ARN");
        if (arn_region(t.model_id) != t.region) {
            return bad(path + ".model_id", "the ARN is in region \"" +
                                               std::string(arn_region(t.model_id)) +
                                               "\", not the target's \"" + t.region + "\"");
        }
    }
    if (auto m = v.FindMember("service_tier"); m != v.MemberEnd()) {
        auto st = get_string(m->value, path + ".service_tier");
        if (!st) return st.error();
        static constexpr std::array tiers = {"priority", "default", "flex", "reserved"};
        if (std::find(tiers.begin(), tiers.end(), *st) == tiers.end())
            return bad(path + ".service_tier", "must be priority, default, flex or reserved");
        t.service_tier = *st;
    }
    return t;
}

result<void> parse_routes(const json& v, config& out) {
    if (!v.IsObject()) return bad("routes", "must be an object of route name -> {targets}");
    for (auto it = v.MemberBegin(); it != v.MemberEnd(); ++it) {
        std::string name(it->name.GetString(), it->name.GetStringLength());
        const std::string path = "routes." + name;
        if (name.empty() || name.size() > 2048)
            return bad("routes", "a route name must be 1 to 2048 characters");
        if (out.routes.contains(name)) return bad(path, "key appears twice");
        if (!it->value.IsObject()) return bad(path, "must be an object with targets");
        if (auto r = only_known(it->value, path, {"targets"}); !r) return r.error();
        auto targets = it->value.FindMember("targets");
        if (targets == it->value.MemberEnd()) return bad(path + ".targets", "is required");
        if (!targets->value.IsArray() || targets->value.Empty() || targets->value.Size() > 16)
            return bad(path + ".targets", "must be an array of 1 to 16 targets");
        route r;
        for (rapidjson::SizeType i = 0; i < targets->value.Size(); ++i) {
            auto t =
                parse_target(targets->value[i], path + ".targets[" + std::to_string(i) + "]", out);
            if (!t) return t.error();
            if (t->tier == tier::batch && !out.batch.enabled) {
                return bad(path + ".targets[" + std::to_string(i) + "].tier",
                           "batch needs the batch section (bucket, role_arn, spool_dir, ...)");
            }
            r.targets.push_back(std::move(*t));
        }
        out.routes.emplace(std::move(name), std::move(r));
    }
    return {};
}

result<double> get_seconds(const json& v, const std::string& path, double lo, double hi) {
    if (!v.IsNumber() || v.GetDouble() < lo || v.GetDouble() > hi) {
        return bad(path, "must be a number of seconds from " + std::to_string(lo) + " to " +
                             std::to_string(hi));
    }
    return v.GetDouble();
}

std::chrono::milliseconds to_ms(double seconds) {
    return std::chrono::milliseconds(std::llround(seconds * 1000.0));
}

/// S3 bucket names: 3-63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit.
bool is_bucket_name(std::string_view b) {
    if (b.size() < 3 || b.size() > 63) return false;
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!alnum(b.front()) || !alnum(b.back())) return false;
    return std::all_of(b.begin(), b.end(),
                       [&](char c) { return alnum(c) || c == '.' || c == '-'; });
}

/// The batch tier's required settings: `bucket`, `role_arn`, `spool_dir`.
result<void> parse_batch_required(const json& v, batch_config& b) {
    for (auto [key, into] : {std::pair{"bucket", &b.bucket}, std::pair{"role_arn", &b.role_arn},
                             std::pair{"spool_dir", &b.spool_dir}}) {
        auto m = v.FindMember(key);
        if (m == v.MemberEnd()) return bad(std::string("batch.") + key, "is required");
        auto s = get_string(m->value, std::string("batch.") + key);
        if (!s) return s.error();
        *into = *s;
    }
    if (!is_bucket_name(b.bucket))
        return bad("batch.bucket", "\"" + b.bucket + "\" is not an S3 bucket name");
    if (!b.role_arn.starts_with("arn:") || b.role_arn.find(":role/") == std::string::npos)
        return bad("batch.role_arn", "must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)");
    if (b.spool_dir.empty()) return bad("batch.spool_dir", "must name a directory");
    return {};
}

/// The batch tier's optional settings, in the order they are checked: `prefix`,
/// `min_records`, `max_wait_s`, `poll_interval_s`, `underfull`.
result<void> parse_batch_optional(const json& v, batch_config& b) {
    if (auto m = v.FindMember("prefix"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "batch.prefix");
        if (!s) return s.error();
        if (s->starts_with('/') || s->ends_with('/') || s->size() > 512)
            return bad("batch.prefix", "no leading or trailing '/', at most 512 characters");
        b.prefix = *s;
    }
    if (auto m = v.FindMember("min_records"); m != v.MemberEnd()) {
        auto n = get_int(m->value, "batch.min_records", 1, 50'000);
        if (!n) return n.error();
        b.min_records = static_cast<std::size_t>(*n);
    }
    for (auto [key, into, hi] : {std::tuple{"max_wait_s", &b.max_wait, 7 * 86400.0},
                                 std::tuple{"poll_interval_s", &b.poll_interval, 3600.0}}) {
        if (auto m = v.FindMember(key); m != v.MemberEnd()) {
            auto n = get_seconds(m->value, std::string("batch.") + key, 0.01, hi);
            if (!n) return n.error();
            *into = to_ms(*n);
        }
    }
    if (auto m = v.FindMember("underfull"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "batch.underfull");
        if (!s) return s.error();
        if (*s != "wait" && *s != "on-demand")
            return bad("batch.underfull", "must be \"wait\" or \"on-demand\"");
        b.underfull_on_demand = *s == "on-demand";
    }
    return {};
}

result<void> parse_batch(const json& v, config& out) {
    if (!v.IsObject()) return bad("batch", "must be an object");
    if (auto r = only_known(v, "batch",
                            {"bucket", "prefix", "role_arn", "spool_dir", "min_records",
                             "max_wait_s", "underfull", "poll_interval_s"});
        !r)
        return r.error();
    out.batch.enabled = true;
    if (auto r = parse_batch_required(v, out.batch); !r) return r;
    return parse_batch_optional(v, out.batch);
}

result<void> parse_credentials(const json& v, config& out) {
    if (!v.IsObject()) return bad("credentials", "must be an object");
    if (auto r = only_known(v, "credentials", {"source", "profile"}); !r) return r.error();
    if (auto m = v.FindMember("source"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "credentials.source");
        if (!s) return s.error();
        static constexpr std::array sources = {"environment", "web-identity", "profile",
                                               "container", "imds"};
        if (std::find(sources.begin(), sources.end(), *s) == sources.end()) {
            return bad("credentials.source",
                       "must be environment, web-identity, profile, container or imds");
        }
        out.credentials.source = *s;
    }
    if (auto m = v.FindMember("profile"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "credentials.profile");
        if (!s) return s.error();
        out.credentials.profile = *s;
        if (out.credentials.source.empty()) out.credentials.source = "profile";
        if (out.credentials.source != "profile")
            return bad("credentials.profile", "only goes with \"source\": \"profile\"");
    }
    return {};
}

result<void> parse_auth(const json& v, config& out) {
    if (!v.IsObject()) return bad("auth", "must be an object");
    if (auto r = only_known(v, "auth", {"mode", "token_file"}); !r) return r.error();
    if (auto m = v.FindMember("mode"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "auth.mode");
        if (!s) return s.error();
        if (*s != "sigv4" && *s != "bearer") return bad("auth.mode", "must be sigv4 or bearer");
        out.auth.bearer = *s == "bearer";
    }
    if (auto m = v.FindMember("token_file"); m != v.MemberEnd()) {
        auto s = get_string(m->value, "auth.token_file");
        if (!s) return s.error();
        if (!out.auth.bearer) return bad("auth.token_file", "only goes with \"mode\": \"bearer\"");
        out.auth.token_file = *s;
    }
    return {};
}

/// A top-level key whose value apply_override checks (the same rules as a command-line
/// override, so a file and a flag can never disagree).
template <const char* Key>
result<void> parse_override(const json& v, config& out) {
    auto s = get_string(v, Key);
    if (!s) return s.error();
    return apply_override(out, Key, *s, Key);
}

constexpr char listen_key[] = "listen";
constexpr char admin_listen_key[] = "admin_listen";
constexpr char log_level_key[] = "log_level";
constexpr char log_format_key[] = "log_format";

/// Without a `regions` key, every commercial region with its standard endpoints.
result<void> use_default_regions(config& out) {
    for (auto name : default_regions()) {
        out.regions.emplace(name, standard_endpoint(name));
        out.control_endpoints.emplace(name, standard_control_endpoint(name));
        out.s3_endpoints.emplace(name, standard_s3_endpoint(name));
    }
    return {};
}

/// Checked whether or not the key is given: the built-in default must be allowed too.
result<void> check_default_region(config& out) {
    if (!out.regions.contains(out.default_region))
        return bad("default_region", "\"" + out.default_region + "\" is not in regions");
    return {};
}

result<void> parse_default_region(const json& v, config& out) {
    auto s = get_string(v, "default_region");
    if (!s) return s.error();
    out.default_region = *s;
    return check_default_region(out);
}

result<void> parse_control_plane(const json& v, config& out) {
    if (!v.IsObject()) return bad("control_plane", "must be an object");
    if (auto r = only_known(v, "control_plane", {"cache_s"}); !r) return r.error();
    if (auto c = v.FindMember("cache_s"); c != v.MemberEnd()) {
        auto n = get_int(c->value, "control_plane.cache_s", 0, 3600);
        if (!n) return n.error();
        out.control_plane_cache = std::chrono::seconds(*n);
    }
    return {};
}

result<void> parse_tls(const json& v, config& out) {
    if (!v.IsObject()) return bad("tls", "must be an object");
    if (auto r = only_known(v, "tls", {"listen", "cert_file", "key_file"}); !r) return r.error();
    tls_listener_config t;
    for (const char* key : {"listen", "cert_file", "key_file"}) {
        if (!v.HasMember(key)) return bad(std::string("tls.") + key, "is required");
    }
    auto listen = get_string(v["listen"], "tls.listen");
    if (!listen) return listen.error();
    auto where = parse_listen_address(*listen, "tls.listen");
    if (!where) return where.error();
    t.listen = std::move(*where);
    for (auto [key, field] : {std::pair{"cert_file", &t.cert_file}, {"key_file", &t.key_file}}) {
        auto path = get_string(v[key], std::string("tls.") + key);
        if (!path) return path.error();
        if (path->empty()) return bad(std::string("tls.") + key, "must name a PEM file");
        *field = *path;
    }
    out.tls = std::move(t);
    return {};
}

result<void> parse_shared_state(const json& v, config& out) {
    if (!v.IsObject()) return bad("shared_state", "must be an object with a redis section");
    if (auto r = only_known(v, "shared_state", {"redis"}); !r) return r.error();
    auto redis = v.FindMember("redis");
    if (redis == v.MemberEnd()) return bad("shared_state.redis", "is required");
    const json& r = redis->value;
    const std::string path = "shared_state.redis";
    if (!r.IsObject()) return bad(path, "must be an object");
    if (auto k = only_known(
            r, path,
            {"url", "password_file", "tls", "ca_file", "key_prefix", "timeout_ms", "fleet_size"});
        !k)
        return k.error();
    shared_state_config s;
    if (!r.HasMember("url")) return bad(path + ".url", "is required");
    auto url = get_string(r["url"], path + ".url");
    if (!url) return url.error();
    auto parsed = fleet::parse_redis_url(*url);
    if (!parsed) return bad(path + ".url", parsed.error().message);
    s.url = *url;
    s.tls = parsed->tls;
    if (auto m = r.FindMember("tls"); m != r.MemberEnd()) {
        if (!m->value.IsBool()) return bad(path + ".tls", "must be true or false");
        if (parsed->tls && !m->value.GetBool())
            return bad(path + ".tls", "is false but the url says rediss:// (TLS)");
        s.tls = m->value.GetBool();
    }
    for (auto [key, field] :
         {std::pair{"password_file", &s.password_file}, {"ca_file", &s.ca_file}}) {
        if (auto m = r.FindMember(key); m != r.MemberEnd()) {
            auto f = get_string(m->value, path + "." + key);
            if (!f) return f.error();
            if (f->empty()) return bad(path + "." + key, "must name a file");
            *field = *f;
        }
    }
    if (!s.ca_file.empty() && !s.tls)
        return bad(path + ".ca_file", "needs TLS (rediss:// or \"tls\": true)");
    if (auto m = r.FindMember("key_prefix"); m != r.MemberEnd()) {
        auto p = get_string(m->value, path + ".key_prefix");
        if (!p) return p.error();
        if (p->size() > 64 || std::any_of(p->begin(), p->end(), [](char c) {
                return static_cast<unsigned char>(c) <= 0x20 || c == 0x7f;
            }))
            return bad(path + ".key_prefix", "must be at most 64 printable characters, no spaces");
        s.key_prefix = *p;
    }
    if (auto m = r.FindMember("timeout_ms"); m != r.MemberEnd()) {
        auto n = get_int(m->value, path + ".timeout_ms", 1, 10'000);
        if (!n) return n.error();
        s.timeout = std::chrono::milliseconds(*n);
    }
    if (auto m = r.FindMember("fleet_size"); m != r.MemberEnd()) {
        auto n = get_int(m->value, path + ".fleet_size", 1, 10'000);
        if (!n) return n.error();
        s.fleet_size = static_cast<unsigned>(*n);
    }
    out.shared_state = std::move(s);
    return {};
}

result<void> parse_allow_unauthenticated(const json& v, config& out) {
    if (!v.IsBool()) return bad("allow_unauthenticated", "must be true or false");
    out.allow_unauthenticated = v.GetBool();
    return {};
}

result<void> parse_shutdown_grace(const json& v, config& out) {
    auto n = get_seconds(v, "shutdown_grace_s", 0, 3600);
    if (!n) return n.error();
    out.shutdown_grace = to_ms(*n);
    return {};
}

result<void> parse_threads(const json& v, config& out) {
    auto n = get_int(v, "threads", 0, 256);
    if (!n) return n.error();
    out.threads = static_cast<unsigned>(*n);  // 0 to 256
    return {};
}

/// The top-level keys as listed in an "unknown key" error.
const std::initializer_list<std::string_view> top_level_keys = {
    "listen",
    "default_region",
    "regions",
    "upstream",
    "limits",
    "retry",
    "rate_limits",
    "routes",
    "batch",
    "credentials",
    "auth",
    "log_level",
    "log_format",
    "threads",
    "shutdown_grace_s",
    "admin_listen",
    "prices",
    "caller_keys",
    "allow_unauthenticated",
    "control_plane",
    "tls",
    "shared_state",
};

struct top_level_parser {
    const char* name;
    result<void> (*parse)(const json& value, config& out);
    result<void> (*absent)(config& out);  ///< when the key is not given; may be null
};

/// In the order they are read: a key may depend on one before it (default_region, routes and
/// caller_keys on regions; routes on batch), and the first error found is the one reported.
constexpr top_level_parser top_level_parsers[] = {
    {"listen", parse_override<listen_key>, nullptr},
    {"admin_listen", parse_override<admin_listen_key>, nullptr},
    {"tls", parse_tls, nullptr},
    {"regions", parse_regions, use_default_regions},
    {"default_region", parse_default_region, check_default_region},
    {"upstream", parse_upstream, nullptr},
    {"control_plane", parse_control_plane, nullptr},
    {"limits", parse_limits, nullptr},
    {"retry", parse_retry, nullptr},
    {"rate_limits", parse_rate_limits, nullptr},
    {"credentials", parse_credentials, nullptr},
    {"auth", parse_auth, nullptr},
    {"batch", parse_batch, nullptr},
    {"routes", parse_routes, nullptr},
    {"log_level", parse_override<log_level_key>, nullptr},
    {"log_format", parse_override<log_format_key>, nullptr},
    {"prices", parse_prices, nullptr},
    {"caller_keys", parse_caller_keys, nullptr},
    {"allow_unauthenticated", parse_allow_unauthenticated, nullptr},
    {"shutdown_grace_s", parse_shutdown_grace, nullptr},
    {"threads", parse_threads, nullptr},
    {"shared_state", parse_shared_state, nullptr},
};

}  // namespace

result<void> apply_endpoint_env(config& cfg,
                                std::string_view s3_url,
                                std::string_view bedrock_url) {
    for (auto [url, map, name] :
         {std::tuple{s3_url, &cfg.s3_endpoints, "AWS_ENDPOINT_URL_S3"},
          std::tuple{bedrock_url, &cfg.control_endpoints, "AWS_ENDPOINT_URL_BEDROCK"}}) {
        if (url.empty()) continue;
        auto parsed = parse_endpoint(url);
        if (!parsed) return bad(name, parsed.error().message);
        for (auto& entry : *map) entry.second = *parsed;
    }
    return {};
}

region_endpoint standard_control_endpoint(std::string_view region) {
    auto ep = standard_endpoint(region);
    ep.host = "bedrock." + std::string(region) + ".amazonaws.com";
    ep.host_header = ep.host;
    return ep;
}

region_endpoint standard_s3_endpoint(std::string_view region) {
    auto ep = standard_endpoint(region);
    ep.host = "s3." + std::string(region) + ".amazonaws.com";
    ep.host_header = ep.host;
    return ep;
}

std::string_view tier_name(tier t) {
    switch (t) {
        case tier::on_demand:
            return "on-demand";
        case tier::provisioned:
            return "provisioned";
        case tier::batch:
            return "batch";
    }
    return "on-demand";
}

bool parse_tier(std::string_view s, tier& out) {
    for (tier t : {tier::on_demand, tier::provisioned, tier::batch}) {
        if (s == tier_name(t)) {
            out = t;
            return true;
        }
    }
    return false;
}

const std::vector<std::string_view>& default_regions() {
    // Commercial-partition regions where the bedrock-runtime endpoint is offered.
    static const std::vector<std::string_view> regions = {
        "us-east-1",      "us-east-2",      "us-west-1",      "us-west-2",      "ca-central-1",
        "ca-west-1",      "sa-east-1",      "mx-central-1",   "eu-central-1",   "eu-central-2",
        "eu-north-1",     "eu-south-1",     "eu-south-2",     "eu-west-1",      "eu-west-2",
        "eu-west-3",      "ap-east-2",      "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
        "ap-south-1",     "ap-south-2",     "ap-southeast-1", "ap-southeast-2", "ap-southeast-3",
        "ap-southeast-4", "ap-southeast-5", "ap-southeast-7", "il-central-1",   "me-central-1",
        "me-south-1",     "af-south-1",
    };
    return regions;
}

bool is_region_name(std::string_view s) {
    // ^[a-z]{2}(-[a-z]+)+-\d$
    auto lower = [](char c) { return c >= 'a' && c <= 'z'; };
    if (s.size() < 6 || !lower(s[0]) || !lower(s[1]) || s[2] != '-') return false;
    if (s[s.size() - 2] != '-' || s.back() < '0' || s.back() > '9') return false;
    std::string_view middle = s.substr(3, s.size() - 5);  // "[a-z]+(-[a-z]+)*"
    if (middle.empty() || middle.front() == '-' || middle.back() == '-') return false;
    char prev = '-';
    for (char c : middle) {
        if (c == '-' ? prev == '-' : !lower(c)) return false;
        prev = c;
    }
    return true;
}

region_endpoint standard_endpoint(std::string_view region) {
    region_endpoint ep;
    ep.tls = true;
    ep.host = "bedrock-runtime." + std::string(region) + ".amazonaws.com";
    ep.port = 443;
    ep.host_header = ep.host;
    return ep;
}

result<region_endpoint> parse_endpoint(std::string_view url) {
    auto u = boost::urls::parse_absolute_uri(url);
    if (!u) return validation_error("not an absolute URL: " + std::string(url));
    region_endpoint ep;
    if (u->scheme() == "https") {
        ep.tls = true;
        ep.port = 443;
    } else if (u->scheme() == "http") {
        ep.tls = false;
        ep.port = 80;
    } else {
        return validation_error("scheme must be https or http");
    }
    if (u->has_userinfo() || u->has_query() || u->has_fragment() ||
        !(u->encoded_path().empty() || u->encoded_path() == "/")) {
        return validation_error("must be scheme://host[:port] with no path, query or user info");
    }
    ep.host = std::string(u->encoded_host_address());
    if (ep.host.empty()) return validation_error("has no host");
    if (u->has_port()) {
        if (u->port_number() == 0) return validation_error("port must be 1-65535");
        ep.port = u->port_number();
    }
    bool default_port = ep.port == (ep.tls ? 443 : 80);
    ep.host_header = std::string(u->encoded_host_and_port());
    if (default_port) ep.host_header = std::string(u->encoded_host());
    if (ep.host.size() > 2 && ep.host.front() == '[')
        ep.host = ep.host.substr(1, ep.host.size() - 2);
    return ep;
}

result<listen_address> parse_listen_address(std::string_view s, std::string_view path) {
    const std::string where(path);
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
        return bad(where, "must be host:port, e.g. 127.0.0.1:8080");
    }
    std::string_view host = s.substr(0, colon);
    std::string_view port = s.substr(colon + 1);
    if (host.front() == '[') {
        if (host.back() != ']' || host.size() < 3) return bad(where, "bad IPv6 literal");
        host = host.substr(1, host.size() - 2);
    }
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || p != port.data() + port.size() || value > 65535 || port.empty()) {
        return bad(where, "port must be a number from 0 to 65535");
    }
    // The listener binds an address, never a name: what start-up would refuse is refused here,
    // so --check-config says so first.
    const std::string literal(host);
    unsigned char addr[16];
    if (inet_pton(AF_INET, literal.c_str(), addr) != 1 &&
        inet_pton(AF_INET6, literal.c_str(), addr) != 1) {
        return bad(where, "\"" + literal +
                              "\" is not an IP address (a listener binds an address, not a "
                              "name: use 127.0.0.1 rather than localhost)");
    }
    return listen_address{std::string(host), static_cast<std::uint16_t>(value)};
}

result<void> apply_override(config& cfg,
                            std::string_view key,
                            std::string_view value,
                            std::string_view source) {
    const std::string where(source);
    if (key == "listen" || key == "admin_listen") {
        auto a = parse_listen_address(value, source);
        if (!a) return a.error();
        if (key == "listen") {
            cfg.listen_host = a->host;
            cfg.listen_port = a->port;
        } else {
            cfg.admin_listen = std::move(*a);
        }
    } else if (key == "log_level") {
        static constexpr std::array levels = {"trace", "debug",    "info", "warn",
                                              "error", "critical", "off"};
        if (std::find(levels.begin(), levels.end(), value) == levels.end())
            return bad(where, "must be one of trace, debug, info, warn, error, critical, off");
        cfg.log_level = std::string(value);
    } else if (key == "log_format") {
        if (value != "json" && value != "text") return bad(where, "must be json or text");
        cfg.log_format = std::string(value);
    } else {
        return bad(where, "is not a key that can be overridden");
    }
    return {};
}

const price* find_price(const config& cfg,
                        std::string_view model_id,
                        std::string_view client_model) {
    if (auto it = cfg.prices.find(model_id); it != cfg.prices.end()) return &it->second;
    if (auto it = cfg.prices.find(client_model); it != cfg.prices.end()) return &it->second;
    return nullptr;
}

double token_cost_usd(const price& p,
                      tier t,
                      std::uint64_t input_tokens,
                      std::uint64_t output_tokens) {
    if (t == tier::provisioned) return 0;
    double usd = static_cast<double>(input_tokens) / 1000.0 * p.input_per_1k +
                 static_cast<double>(output_tokens) / 1000.0 * p.output_per_1k;
    return t == tier::batch ? usd * 0.5 : usd;
}

result<void> check_exposure(const config& cfg) {
    const std::string_view host = cfg.listen_host;
    // An IP literal (parse_listen_address): 127.0.0.0/8 or ::1.
    const bool loopback = host.starts_with("127.") || host == "::1";
    if (loopback || !cfg.caller_keys.empty() || cfg.allow_unauthenticated) return {};
    return bad("listen",
               "\"" + cfg.listen_host +
                   "\" is not a loopback address and no caller_keys are set: anyone who reaches "
                   "it would spend this gateway's AWS credentials. Set caller_keys, or "
                   "\"allow_unauthenticated\": true if something else guards it");
}

std::set<std::string, std::less<>> named_models(const config& cfg) {
    std::set<std::string, std::less<>> out;
    for (const auto& [name, r] : cfg.routes) {
        out.insert(name);
        for (const auto& t : r.targets) out.insert(t.model_id);
    }
    for (const auto& [model, l] : cfg.rate_limits) {
        if (model != "*") out.insert(model);
    }
    for (const auto& [model, p] : cfg.prices) out.insert(model);
    return out;
}

std::vector<std::string> restart_only_changes(const config& running, const config& next) {
    std::vector<std::string> changed;
    if (running.listen_host != next.listen_host || running.listen_port != next.listen_port)
        changed.emplace_back("listen");
    if (running.admin_listen != next.admin_listen) changed.emplace_back("admin_listen");
    // The certificate and key files are read again on every reload; the listener stays.
    if (running.tls.has_value() != next.tls.has_value() ||
        (running.tls && running.tls->listen != next.tls->listen))
        changed.emplace_back("tls.listen");
    if (running.threads != next.threads) changed.emplace_back("threads");
    if (running.upstream.ca_file != next.upstream.ca_file) changed.emplace_back("upstream.ca_file");
    if (running.upstream.max_idle_per_host != next.upstream.max_idle_per_host)
        changed.emplace_back("upstream.max_idle_per_host");
    if (running.upstream.pool_idle_timeout != next.upstream.pool_idle_timeout)
        changed.emplace_back("upstream.pool_idle_timeout_ms");
    if (running.credentials != next.credentials) changed.emplace_back("credentials");
    if (running.auth != next.auth) changed.emplace_back("auth");
    if (running.allow_unauthenticated != next.allow_unauthenticated)
        changed.emplace_back("allow_unauthenticated");
    if (running.batch != next.batch || running.control_endpoints != next.control_endpoints ||
        running.s3_endpoints != next.s3_endpoints)
        changed.emplace_back("batch");
    // The Redis connections are made at start, one per thread.
    if (running.shared_state != next.shared_state) changed.emplace_back("shared_state");
    return changed;
}

result<config> parse_config(std::string_view text) {
    rapidjson::Document doc;
    bgw::util::parse_json(doc, std::string_view(text.data(), text.size()));
    if (doc.HasParseError()) {
        return validation_error("config is not valid JSON (nested at most " +
                                std::to_string(bgw::util::max_json_depth) + " levels) at offset " +
                                std::to_string(doc.GetErrorOffset()) + ": " +
                                rapidjson::GetParseError_En(doc.GetParseError()));
    }
    if (!doc.IsObject()) return validation_error("config must be a JSON object");
    if (auto r = only_known(doc, "", top_level_keys); !r) return r.error();
    config out;
    for (const auto& k : top_level_parsers) {
        result<void> r;
        if (auto m = doc.FindMember(k.name); m != doc.MemberEnd())
            r = k.parse(m->value, out);
        else if (k.absent)
            r = k.absent(out);
        if (!r) return r.error();
    }
    return out;
}

}  // namespace bgw::config
