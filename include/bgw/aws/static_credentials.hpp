#pragma once
/// Long-term credentials from the environment or the shared credentials file, as the AWS SDKs
/// read them. Pure: the caller passes the environment lookup and the file's contents.
/// The building blocks of the environment and profile providers (credential_chain.hpp).

#include "bgw/aws/sigv4.hpp"

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace bgw::aws {

/// Returns the value of an environment variable, or nullopt when unset.
using env_lookup = std::function<std::optional<std::string>(std::string_view)>;

/// AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN); nullopt unless both keys are
/// set and non-empty.
std::optional<credentials> credentials_from_env(const env_lookup& env);

/// Static keys of `profile` in an INI shared credentials file (`[default]`, `[name]`;
/// aws_access_key_id, aws_secret_access_key, aws_session_token; `#`/`;` comments).
std::optional<credentials> credentials_from_ini(std::string_view file_text,
                                                std::string_view profile);

/// Where the shared credentials file is: AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials.
std::optional<std::string> shared_credentials_path(const env_lookup& env);

/// AWS_PROFILE, else "default".
std::string profile_name(const env_lookup& env);

}  // namespace bgw::aws
