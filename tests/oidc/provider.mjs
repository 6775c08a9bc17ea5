// A real OpenID Connect provider on loopback for the relay's sign-in tests: panva's
// oidc-provider (installed by scripts/test into .cache/npm), with its development
// interactions (a login form that takes one of the configured users, then consent).
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"modules": ".../node_modules", "port": N, "clients": [...client metadata],
//          "users": {"alice": {"name": ..., "email": ...}, ...}}
// Prints "listening <issuer>" once it accepts connections.
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const entry = path.join(config.modules, "oidc-provider", "lib", "index.js");
const { default: Provider } = await import(pathToFileURL(entry).href);

const issuer = `http://127.0.0.1:${config.port}`;
const provider = new Provider(issuer, {
  clients: config.clients,
  // Only the configured users exist: any other login is refused by the provider.
  async findAccount(ctx, id) {
    const user = config.users[id];
    if (!user) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, email_verified: true, ...user }) };
  },
  claims: { openid: ["sub"], profile: ["name"], email: ["email", "email_verified"] },
  cookies: { keys: ["a-test-only-cookie-signing-key"] },
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => true },
  ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 600, Grant: 600 },
});
provider.on("server_error", (ctx, err) => console.error("server_error", err));
provider.listen(config.port, "127.0.0.1", () => console.log(`listening ${issuer}`));
