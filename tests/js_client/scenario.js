'use strict';
// Drives the third-party client eureka-js-client 4.5.0 against a running Eureka server.
//
// Usage: node scenario.js SERVICE_URL      (e.g. https://user:password@127.0.0.1:8761/eureka)
//
// Registers JS-ALPHA, heartbeats every second, fetches the registry every second until it
// lists itself, then prints DISCOVERED and waits for the line STOP on stdin before it
// cancels through stop(). Output, one line each: REGISTERED, DISCOVERED, STOPPED, or
// FAIL <reason> (exit status 1). Every wait is bounded.

const { Eureka } = require('eureka-js-client');
const readline = require('readline');

const APP = 'JS-ALPHA';
const ID = '127.0.0.1:js-alpha:18091';
const LIMIT_MS = 60000;

function say(line) {
  process.stdout.write(line + '\n');
}

function fail(reason) {
  say('FAIL ' + String(reason).replace(/\n/g, ' '));
  process.exit(1);
}

const serviceUrl = process.argv[2];
if (!serviceUrl) fail('usage: scenario.js SERVICE_URL');
setTimeout(() => fail('scenario did not finish within ' + LIMIT_MS + ' ms'), LIMIT_MS).unref();

const client = new Eureka({
  instance: {
    app: APP,
    instanceId: ID,
    hostName: 'localhost',
    ipAddr: '127.0.0.1',
    port: { $: 18091, '@enabled': true },
    vipAddress: 'js-alpha',
    statusPageUrl: 'http://127.0.0.1:18091/info',
    dataCenterInfo: { '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo', name: 'MyOwn' },
  },
  eureka: {
    serviceUrls: { default: [serviceUrl.replace(/\/$/, '') + '/apps/'] },
    heartbeatInterval: 1000,
    registryFetchInterval: 1000,
    maxRetries: 2,
    requestRetryDelay: 200,
  },
});
client.logger.level('warn');

let heartbeats = 0;
client.on('heartbeat', () => {
  heartbeats += 1;
});

client.start((err) => {
  if (err) fail('start: ' + err);
  say('REGISTERED');
  const poll = setInterval(() => {
    const listed = client.getInstancesByAppId(APP).some((i) => i.instanceId === ID);
    if (listed && heartbeats >= 2) {
      clearInterval(poll);
      say('DISCOVERED');
      const lines = readline.createInterface({ input: process.stdin });
      lines.on('line', (line) => {
        if (line.trim() !== 'STOP') return;
        client.stop((stopErr) => {
          if (stopErr) fail('stop: ' + stopErr);
          say('STOPPED');
          process.exit(0);
        });
      });
      lines.on('close', () => fail('stdin closed before STOP'));
    }
  }, 100);
});
