#pragma once
/// Derived SigV4 signing keys, cached per (access key, date, region, service).
/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request").

#include "bgw/aws/sigv4.hpp"

#include <array>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

namespace bgw::aws {

using signing_key = sha256_digest;

/// One-shot HMAC-SHA256 (OpenSSL), the step SigV4 repeats: key derivation and the signature.
/// HMAC is fetched once per process and each thread reuses its own MAC context, so the call
/// does no algorithm lookup. Out of memory aborts (as everywhere in the gateway).
signing_key hmac_sha256(std::span<const std::uint8_t> key, std::string_view msg);

/// Computes the derived key without any cache.
signing_key derive_signing_key(std::string_view secret,
                               std::string_view date,
                               std::string_view region,
                               std::string_view service);

/// Thread-safe cache of derived keys. A changed secret for the same access key id is never
/// served a stale key (the secret's fingerprint is part of the entry). Bounded: old dates are
/// evicted when the date changes.
class signing_key_cache {
public:
    signing_key get(const credentials& creds,
                    std::string_view date,
                    std::string_view region,
                    std::string_view service);
    std::size_t size() const;

private:
    struct entry {
        sha256_digest secret_fingerprint;  ///< SHA-256 of the secret, never the secret itself
        signing_key key;
    };
    mutable std::mutex mutex_;
    std::string current_date_;
    std::unordered_map<std::string, entry> entries_;
};

}  // namespace bgw::aws
