import { writeFileSync } from 'node:fs';
import { printGatewaySchema } from './sdl.js';

writeFileSync(new URL('../../schema.graphql', import.meta.url), await printGatewaySchema());
console.log('wrote schema.graphql');
