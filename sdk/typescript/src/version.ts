/** The SDK's version; equals sdk/VERSION and package.json's (test.sh checks both). */
export const VERSION = "0.1.0";

/** The SDK's part of the user-agent header, sent before the transport's own ("connect-es/…"). */
export const USER_AGENT = `aiprod-sdk-typescript/${VERSION}`;
