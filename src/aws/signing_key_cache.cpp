#include "bgw/aws/signing_key_cache.hpp"

#include <cstdlib>
#include <span>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace bgw::aws {
namespace {

/// Above this many (access key, region, service) entries for one date the cache starts over.
/// A gateway signs for a handful of scopes; the cap only guards against unbounded growth if
/// something upstream hands us an unexpected variety of keys or regions.
constexpr std::size_t max_entries = 1024;

std::string entry_key(const credentials& creds, std::string_view region, std::string_view service) {
    // NUL cannot occur in any of the parts, so the concatenation is unambiguous.
    std::string k = creds.access_key_id;
    k += '\0';
    k += region;
    k += '\0';
    k += service;
    return k;
}

}  // namespace

signing_key hmac_sha256(std::span<const std::uint8_t> key, std::string_view msg) {
    signing_key out{};
    unsigned int len = 0;
    // With a built-in digest, HMAC() fails only on memory exhaustion, which the gateway treats
    // as fatal everywhere (std::string would throw bad_alloc just the same).
    if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
             reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out.data(),
             &len) == nullptr ||
        len != out.size()) {
        std::abort();
    }
    return out;
}

signing_key derive_signing_key(std::string_view secret,
                               std::string_view date,
                               std::string_view region,
                               std::string_view service) {
    std::string k_secret = "AWS4";
    k_secret += secret;
    const auto* secret_bytes = reinterpret_cast<const std::uint8_t*>(k_secret.data());
    const signing_key k_date = hmac_sha256({secret_bytes, k_secret.size()}, date);
    // Do not leave a copy of the secret behind in freed memory.
    OPENSSL_cleanse(k_secret.data(), k_secret.size());
    const signing_key k_region = hmac_sha256(k_date, region);
    const signing_key k_service = hmac_sha256(k_region, service);
    return hmac_sha256(k_service, "aws4_request");
}

signing_key signing_key_cache::get(const credentials& creds,
                                   std::string_view date,
                                   std::string_view region,
                                   std::string_view service) {
    const std::string key = entry_key(creds, region, service);
    // SHA-256 of the secret: notices a rotated secret without keeping a second copy of it.
    const std::string print = sha256_hex(creds.secret_access_key);
    {
        std::lock_guard lock(mutex_);
        if (date == current_date_) {
            auto it = entries_.find(key);
            if (it != entries_.end() && it->second.secret_fingerprint == print) {
                return it->second.key;
            }
        }
    }

    // Derive outside the lock so concurrent signers for other scopes are not held up.
    const signing_key derived = derive_signing_key(creds.secret_access_key, date, region, service);

    std::lock_guard lock(mutex_);
    // YYYYMMDD compares correctly as a string. A newer date evicts everything older; a request
    // still signed with yesterday's date (just after midnight) gets a correct key but is not
    // cached, so stragglers cannot make the cache flip back and forth between two dates.
    if (date > current_date_) {
        entries_.clear();
        current_date_ = date;
    }
    if (date == current_date_) {
        if (entries_.size() >= max_entries && entries_.find(key) == entries_.end()) {
            entries_.clear();
        }
        entries_.insert_or_assign(key, entry{print, derived});
    }
    return derived;
}

std::size_t signing_key_cache::size() const {
    std::lock_guard lock(mutex_);
    return entries_.size();
}

}  // namespace bgw::aws
