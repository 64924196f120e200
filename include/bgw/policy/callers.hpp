#pragma once
/// Who may call the gateway (issue 10): caller keys, presented as `x-api-key` or
/// `Authorization: Bearer`, checked against the config's SHA-256 hashes in constant time, then
/// what the key may reach. A SigV4 `Authorization` from an SDK is not a caller key.

#include "bgw/config/config.hpp"
#include "bgw/error.hpp"

#include <string>
#include <string_view>

namespace bgw::policy {

/// A caller that presented a known key.
struct caller {
    std::string_view name;  ///< the key's name in the config (for logs); never the key
    const config::caller_key* key = nullptr;
};

/// The caller a request's headers name. With no caller keys configured every request passes
/// (a caller with no key). Otherwise 401 when no key is presented, or an unknown one.
/// Every configured hash is compared, whatever matches, so timing says nothing about which.
result<caller> authenticate(const config::config& cfg,
                            std::string_view x_api_key,
                            std::string_view authorization);

/// 403 unless the key may call `model` (the model id or route name the app sent); `model` is
/// empty for operations that name no model, which a key limited to models may not call.
result<void> authorize_model(const caller& c, std::string_view model);

/// Whether the key may have a request run in `region`.
bool region_allowed(const caller& c, std::string_view region);

}  // namespace bgw::policy
