#include "bgw/aws/signing_key_cache.hpp"

#include <cstdlib>
#include <span>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

namespace bgw::aws {
namespace {

/// Above this many (access key, region, service) entries for one date the cache starts over.
/// A gateway signs for a handful of scopes; the cap only guards against unbounded growth if
/// something upstream hands us an unexpected variety of keys or regions.
constexpr std::size_t max_entries = 1024;

/// Writes the map key of one scope into `k`. NUL cannot occur in any of the parts, so the
/// concatenation is unambiguous.
void entry_key(std::string& k,
               const credentials& creds,
               std::string_view region,
               std::string_view service) {
    k.clear();
    k += creds.access_key_id;
    k += '\0';
    k += region;
    k += '\0';
    k += service;
}

/// HMAC, fetched from the default provider once per process: HMAC() fetched it (and SHA-256)
/// again on every call, which cost more than the hashing. Never freed: it lives as long as the
/// process.
EVP_MAC* hmac_algorithm() {
    static EVP_MAC* const mac = [] {
        EVP_MAC* m = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
        if (m == nullptr) std::abort();  // no default provider: nothing can be signed
        return m;
    }();
    return mac;
}

/// One HMAC-SHA256 context per thread, re-keyed by every call (signing never suspends, so a
/// thread never has two calls in flight). Between calls it holds the padded-key state of the
/// last key: `derive_signing_key` re-keys it three times after the secret's step, so what
/// stays behind is derived-key state, never the secret's.
EVP_MAC_CTX* thread_hmac_ctx() {
    struct holder {
        EVP_MAC_CTX* ctx = nullptr;
        holder() {
            ctx = EVP_MAC_CTX_new(hmac_algorithm());
            char digest[] = "SHA256";
            const OSSL_PARAM params[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                OSSL_PARAM_construct_end()};
            if (ctx == nullptr || EVP_MAC_CTX_set_params(ctx, params) != 1) std::abort();
        }
        holder(const holder&) = delete;
        holder& operator=(const holder&) = delete;
        ~holder() { EVP_MAC_CTX_free(ctx); }  // cleanses the keyed state
    };
    thread_local holder h;
    return h.ctx;
}

}  // namespace

signing_key hmac_sha256(std::span<const std::uint8_t> key, std::string_view msg) {
    signing_key out{};
    std::size_t len = 0;
    EVP_MAC_CTX* ctx = thread_hmac_ctx();
    // With a built-in digest these fail only on memory exhaustion, which the gateway treats as
    // fatal everywhere (std::string would throw bad_alloc just the same).
    if (EVP_MAC_init(ctx, key.data(), key.size(), nullptr) != 1 ||
        EVP_MAC_update(ctx, reinterpret_cast<const unsigned char*>(msg.data()), msg.size()) != 1 ||
        EVP_MAC_final(ctx, out.data(), &len, out.size()) != 1 || len != out.size()) {
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
    // Built in a per-thread buffer, so a warm lookup allocates nothing.
    thread_local std::string key;
    entry_key(key, creds, region, service);
    // SHA-256 of the secret: notices a rotated secret without keeping a second copy of it.
    const sha256_digest print = sha256(creds.secret_access_key);
    {
        std::lock_guard lock(mutex_);
        if (date == current_date_) {
            auto it = entries_.find(key);
            if (it != entries_.end() && CRYPTO_memcmp(it->second.secret_fingerprint.data(),
                                                      print.data(), print.size()) == 0) {
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
