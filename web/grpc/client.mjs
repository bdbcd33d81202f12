// A second gRPC implementation on the contract: @grpc/grpc-js with @grpc/proto-loader reading
// proto/ at run time (no generated code), and the rich error model decoded by hand from the
// grpc-status-details-bin trailer with protobufjs (the library proto-loader itself uses):
// google.rpc.Status, then each Any detail by its type URL.

import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const PROTO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../proto");

const definition = protoLoader.loadSync(
  ["identity/recovery/v1/recovery.proto", "identity/recovery/v1/account.proto"],
  {
    includeDirs: [PROTO],
    keepCase: true, // field names as in the proto and in grpcurl: login_id, flow_id, ...
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).identity.recovery.v1;

const rpcRoot = new protobuf.Root();
rpcRoot.resolvePath = (_origin, target) => path.join(PROTO, target);
rpcRoot.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: true });
const StatusType = rpcRoot.lookupType("google.rpc.Status");
const DETAIL_TYPES = {
  "type.googleapis.com/google.rpc.ErrorInfo": rpcRoot.lookupType("google.rpc.ErrorInfo"),
  "type.googleapis.com/google.rpc.BadRequest": rpcRoot.lookupType("google.rpc.BadRequest"),
  "type.googleapis.com/google.rpc.RetryInfo": rpcRoot.lookupType("google.rpc.RetryInfo"),
};

/** The google.rpc.Status of a failed call, its details decoded: {code, message, errorInfo,
 *  badRequest, retryInfo, unknown: [typeUrl]}. Throws if the trailer is missing. */
export function richError(error) {
  const raw = error?.metadata?.get("grpc-status-details-bin")?.[0];
  if (!raw) throw new Error(`no grpc-status-details-bin on: ${error}`);
  const status = StatusType.toObject(StatusType.decode(raw), { longs: Number, defaults: true });
  const result = { code: status.code, message: status.message, unknown: [] };
  for (const any of status.details) {
    const type = DETAIL_TYPES[any.type_url];
    if (!type) {
      result.unknown.push(any.type_url);
      continue;
    }
    const value = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
    if (any.type_url.endsWith("ErrorInfo")) result.errorInfo = value;
    else if (any.type_url.endsWith("BadRequest")) result.badRequest = value;
    else result.retryInfo = value;
  }
  return result;
}

function promisify(client, method) {
  return (request, metadata = new grpc.Metadata()) =>
    new Promise((resolve, reject) => {
      client[method](request, metadata, { deadline: Date.now() + 30_000 }, (error, response) =>
        error ? reject(error) : resolve(response),
      );
    });
}

/** Promise-returning clients for both services on `address` (host:port, plaintext). */
export function connect(address) {
  const credentials = grpc.credentials.createInsecure();
  const recovery = new v1.RecoveryService(address, credentials);
  const account = new v1.AccountService(address, credentials);
  const api = { close: () => (recovery.close(), account.close()) };
  for (const method of Object.keys(v1.RecoveryService.service)) {
    api[method] = promisify(recovery, method);
  }
  for (const method of Object.keys(v1.AccountService.service)) {
    api[method] = promisify(account, method);
  }
  return api;
}

/** The rich error of a call that must fail (see richError), plus its grpcCode; throws if the
 *  call succeeds. */
export async function rejects(promise) {
  try {
    await promise;
  } catch (error) {
    return { grpcCode: error.code, ...richError(error) };
  }
  throw new Error("the call succeeded");
}

export { grpc };
