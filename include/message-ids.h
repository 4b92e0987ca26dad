/* Stable journal MESSAGE_IDs, one per event kind, documented in
 * systemd/pgsweeper.catalog. Generated once with `systemd-id128 new`;
 * never change one. */
#pragma once

#define MESSAGE_ID_TERMINATED        "c8d9cef8c7894f4eb8061eb514d27d30"
#define MESSAGE_ID_CANCELLED         "1c75ca90e9664672b80b3c59b2d4a97e"
#define MESSAGE_ID_ESCALATED         "44a0d0c1e5574bc1b043a3ea30e523b6"
#define MESSAGE_ID_DRY_RUN           "c2708c6a444b4fd78507c947c439d8b1"
#define MESSAGE_ID_LOGGED            "f498a7a1870c49d38f490d5dc5d9de2d"
#define MESSAGE_ID_SKIPPED           "54a3c730f35546a69dba5dba22cd7c2b"
#define MESSAGE_ID_DENIED            "68a9c72e68a8447a901158084606935d"
#define MESSAGE_ID_FAILED            "684eedf3f0c540bcba4b65fa69abb3e2"
#define MESSAGE_ID_SERVER_CONNECTED  "03f0afd1d6b548998b4406d0a37aaed9"
#define MESSAGE_ID_SERVER_LOST       "c8e578a543714040ac5b84c947cdadef"
#define MESSAGE_ID_SERVER_RESTORED   "ae1189a7813849aea88c50e1bc1f1524"
#define MESSAGE_ID_RELOAD_OK         "50fd87491ed04e19ae30eccd2b43704d"
#define MESSAGE_ID_RELOAD_FAILED     "421a2c1e79b6437694b1c6771eba2ecf"
#define MESSAGE_ID_CAP_HIT           "1b164998ba0c4644b8b752a6cf8d53f4"
#define MESSAGE_ID_STARTED           "045bb094775f4940a6fe388a3fad6d9e"
#define MESSAGE_ID_STOPPED           "26e94be908024ab1bde03b46407f6ea9"
#define MESSAGE_ID_UNKNOWN           "0f3cd89d0c274a1b82b8bec6b832816a"
#define MESSAGE_ID_ABANDONED         "e36841c166924433992743f5df8a72b8"
#define MESSAGE_ID_PRIVILEGES        "8e5315b7190745258ce0e510ad152ace"
#define MESSAGE_ID_ROLE_CHANGED      "80b3b1e28f4e46a8bb2626bf4d417eae"
#define MESSAGE_ID_CHAIN_PROTECTED   "22e192afa7c64449b0a3a7a352e7feac"
#define MESSAGE_ID_OUTCOME           "13377f00caee466294ff3240645d42f7"
#define MESSAGE_ID_CAP_SHORT         "1c4ad1e9d2f74ebaab0e3cfe1cc33169"
#define MESSAGE_ID_HORIZON_HOLDER    "cacf578808084e17add8fd10d9f5ea00"
